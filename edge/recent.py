"""The latest life-safety incidents and what became of each (the status page, `gridedge
status`): committed, on the wire, acknowledged by the broker, carried by SMS.

An incident is one thing happening: a worker's press of their SOS button, one AIS-SART
transmitting, one DSC distress. Its repeats (a beacon heard every minute for hours, a
press sent again) are counted in it, not listed: one SART must not push a worker's SOS
off the list."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import cbor2

from floor.envelope import own_payload

KEEP = 20  # incidents listed
KEEP_MESSAGES = 1000  # messages whose fate is still followed (their incident's state)
WHO = ("worker", "device", "mmsi")
FIELDS = ("worker", "device", "counter", "mmsi", "event", "nature", "cancel")


def incident_of(item: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two life-safety messages one incident: the kind, who or what it is
    about, and for a wearable the press (its counter) and whether it is a cancel."""
    return (item["kind"], *(item.get(k) for k in (*WHO, "counter", "cancel", "nature")))


class RecentAlarms:
    def __init__(self) -> None:
        self._items: OrderedDict[int, dict[str, Any]] = OrderedDict()  # seq -> its message
        self._incidents: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    def committed(self, seq: int, kind: str, body: bytes) -> None:
        """A life-safety row committed (our own signed message: its payload is read)."""
        item: dict[str, Any] = {
            "seq": seq,
            "kind": kind,
            "at": time.time_ns() // 1_000_000,
            "state": "stored",
        }
        try:
            payload = own_payload(body)
            item["src"] = payload["src"]
            d = payload["recs"][0]["d"]
            for name in FIELDS:
                if name in d:
                    item[name] = d[name]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, cbor2.CBORDecodeError):
            pass
        self._items[seq] = item
        while len(self._items) > KEEP_MESSAGES:
            self._items.popitem(last=False)
        key = incident_of(item)
        incident = self._incidents.pop(key, None)
        if incident is None:
            incident = {"first_at": item["at"], "messages": 0}
        incident |= item  # its latest message: seq, time, state
        incident["messages"] += 1
        incident.pop("bearers", None)
        self._incidents[key] = incident  # the most recent last
        while len(self._incidents) > KEEP:
            self._incidents.popitem(last=False)

    def _incident(self, seq: int) -> dict[str, Any] | None:
        """The incident whose latest message is `seq` (an older repeat's fate is not its)."""
        item = self._items.get(seq)
        if item is None:
            return None
        incident = self._incidents.get(incident_of(item))
        return incident if incident is not None and incident["seq"] == seq else None

    def _mark(self, seq: int, state: str) -> None:
        for x in (self._items.get(seq), self._incident(seq)):
            if x is not None and x["state"] != "delivered":
                x["state"] = state

    def published(self, seq: int) -> None:
        self._mark(seq, "sent")

    def acked(self, seq: int) -> None:
        now = time.time_ns() // 1_000_000
        for x in (self._items.get(seq), self._incident(seq)):
            if x is not None:
                x["state"] = "delivered"
                x["acked"] = now

    def by_bearer(self, seq: int, bearer: str) -> None:
        """Carried by another bearer too (`sms`...), as well as by MQTT."""
        for x in (self._items.get(seq), self._incident(seq)):
            if x is not None:
                x["bearers"] = sorted({*x.get("bearers", ()), bearer})

    def get(self, seq: int) -> dict[str, Any] | None:
        """What is known of the life-safety message `seq` (kept for the latest KEEP_MESSAGES)."""
        return self._items.get(seq)

    def snapshot(self) -> list[dict[str, Any]]:
        """The incidents, the latest first: each its latest message's seq, time and state,
        `first_at` and `messages` (how many the incident has sent)."""
        return [dict(x) for x in reversed(self._incidents.values())]
