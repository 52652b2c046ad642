"""The latest life-safety messages and what became of each (the status page, `gridedge
status`): committed, on the wire, acknowledged by the broker, carried by SMS."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import cbor2

from floor.envelope import own_payload

KEEP = 20


class RecentAlarms:
    def __init__(self) -> None:
        self._items: OrderedDict[int, dict[str, Any]] = OrderedDict()

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
            for key in ("worker", "device", "counter", "mmsi", "event", "nature", "cancel"):
                if key in d:
                    item[key] = d[key]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, cbor2.CBORDecodeError):
            pass
        self._items[seq] = item
        while len(self._items) > KEEP:
            self._items.popitem(last=False)

    def _mark(self, seq: int, state: str) -> None:
        item = self._items.get(seq)
        if item is not None and item["state"] != "delivered":
            item["state"] = state

    def published(self, seq: int) -> None:
        self._mark(seq, "sent")

    def acked(self, seq: int) -> None:
        item = self._items.get(seq)
        if item is not None:
            item["state"] = "delivered"
            item["acked"] = time.time_ns() // 1_000_000

    def by_bearer(self, seq: int, bearer: str) -> None:
        """Carried by another bearer too (`sms`...), as well as by MQTT."""
        item = self._items.get(seq)
        if item is not None:
            item["bearers"] = sorted({*item.get("bearers", ()), bearer})

    def get(self, seq: int) -> dict[str, Any] | None:
        """What is known of the life-safety message `seq` (kept for the latest KEEP)."""
        return self._items.get(seq)

    def snapshot(self) -> list[dict[str, Any]]:
        return [dict(x) for x in reversed(self._items.values())]
