"""Lone-worker man-down tag (docs/ble-profiles.md, service 6a1e0300).

The tag notifies `fall` and `no_motion` (its accelerometer's verdicts), which become
`worker.down` at life-safety priority, committed with their counter before the tag is
told "received" (the same counted events as an SOS button's). It also checks in every
`interval` seconds (its Check-in Interval characteristic): a worker whose tag has not
been heard from for one and a half intervals (at least interval + 2 s), connected or
not, is `worker.overdue` (life-safety), once, and again as `resolved` when the tag is
heard from.
"""

from __future__ import annotations

import enum
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.kinds.base import Host, Link, ProfileMismatch, WearableKind, refuse
from drivers.nmea0183 import Reason, Rejected

SERVICE = u.vendor(0x0300)
EVENT = u.vendor(0x0301)  # notify, read: 8 bytes, the SOS event's layout with its own types
FEEDBACK = u.vendor(0x0302)  # write with response: the SOS feedback's 6 bytes
CHECKIN_INTERVAL = u.vendor(0x0303)  # read: u16 seconds between check-ins

GRACE = 0.5  # of an interval: a radio gap or a resend before a worker counts as overdue
MIN_GRACE_S = 2.0
MIN_INTERVAL_S = 1
_INTERVAL = struct.Struct("<H")


class ManDownEventType(enum.IntEnum):
    CHECK_IN = 1  # the periodic "I am here"
    NO_MOTION = 2  # no movement for the tag's own timeout
    FALL = 3  # a fall detected
    OK = 4  # the worker pressed "I'm OK" after a false alarm
    TEST = 5


DOWN = {ManDownEventType.NO_MOTION: "no_motion", ManDownEventType.FALL: "fall"}


def parse_event(raw: bytes, key: bytes | None = None) -> tuple[ManDownEventType, p.SosEvent] | Rejected:
    """A man-down event: the SOS event's layout (version, type, counter, uptime[, boot, tag])."""
    ev = p.parse_counted(raw, "man-down event", key)
    if isinstance(ev, Rejected):
        return ev
    try:
        kind_ = ManDownEventType(ev.kind)
    except ValueError:
        return Rejected(Reason.BAD_VALUE, bytes(raw[:64]), f"man-down event type {ev.kind}")
    # the counter guard compares counters, uptimes and boots only; the SOS type is a stand-in
    return kind_, p.SosEvent(p.SosEventType.PRESS, ev.counter, ev.uptime_ms, ev.boot)


def encode_event(
    kind: ManDownEventType, counter: int, uptime_ms: int, *, key: bytes | None = None, boot: int = 0
) -> bytes:
    return p.encode_counted(int(kind), counter, uptime_ms, key=key, boot=boot)


def parse_interval(raw: bytes) -> int | Rejected:
    if len(raw) != _INTERVAL.size:
        return Rejected(Reason.MALFORMED, bytes(raw[:64]), "check-in interval length")
    (seconds,) = _INTERVAL.unpack(raw)
    if seconds < MIN_INTERVAL_S:
        return Rejected(Reason.BAD_VALUE, bytes(raw[:64]), f"check-in interval {seconds} s")
    return int(seconds)


def encode_interval(seconds: int) -> bytes:
    return _INTERVAL.pack(seconds)


@dataclass
class _Watch:
    interval_s: float
    last: float  # monotonic time the tag was last heard from
    overdue: bool = False


class ManDownTag(WearableKind):
    name = "man_down"
    counted = True
    alarms = frozenset({"worker.down"})
    service = SERVICE
    label = "man_down"

    def __init__(self) -> None:
        self._watch: dict[str, _Watch] = {}  # device id -> its check-in clock

    async def start(self, link: Link, host: Host) -> None:
        interval = parse_interval(await link.read(CHECKIN_INTERVAL))
        if isinstance(interval, Rejected):
            raise ProfileMismatch(interval.detail)
        await link.subscribe(EVENT, "event")
        watch = self._watch.get(link.w.id)
        if watch is None:
            self._watch[link.w.id] = _Watch(float(interval), time.monotonic())
        else:
            watch.interval_s = float(interval)

    def connected(self, link: Link, host: Host, now: float) -> None:
        self._heard(link, host, now)

    def _heard(self, link: Link, host: Host, now: float) -> None:
        watch = self._watch.get(link.w.id)
        if watch is None:
            return
        watch.last = now
        if watch.overdue:
            watch.overdue = False
            host.submit(
                "worker.overdue",
                link.w.id,
                {"device": link.w.id, "worker": link.w.worker, "state": "resolved"},
            )

    async def handle(self, link: Link, host: Host, tag: str, raw: bytes) -> None:
        got = parse_event(raw, link.w.event_key)
        if isinstance(got, Rejected):
            refuse(link, got)  # a forged check-in resets no clock either
            return
        kind, ev = got
        self._heard(link, host, time.monotonic())
        data: dict[str, Any] = {"device": link.w.id, "worker": link.w.worker}
        if kind in DOWN:
            data["event"] = DOWN[kind]
            if (fix := host.last_fix()) is not None:
                data["fix"] = dict(fix)
            seq = await host.counted_event(
                link, ev, kind="worker.down", data=data, answer=p.Feedback.RECEIVED, feedback=FEEDBACK
            )
            if seq is not None:
                host.worker_alarm(link.w.worker)
        elif kind == ManDownEventType.OK:
            data |= {"event": "ok", "cancel": True}
            await host.counted_event(
                link, ev, kind="worker.down", data=data, answer=p.Feedback.CANCELLED, feedback=FEEDBACK
            )
        elif kind == ManDownEventType.TEST:
            data |= {"state": "connected", "event": "test"}
            await host.counted_event(
                link, ev, kind="device.state", data=data, answer=p.Feedback.RECEIVED, feedback=FEEDBACK
            )
        else:  # a check-in: the clock above is all it is for; answered so the tag rests
            await link.write(FEEDBACK, p.encode_feedback(p.Feedback.RECEIVED, ev.counter, repeat=0))

    async def alert(self, link: Link, pattern: p.Feedback, counter: int) -> None:
        await link.write(FEEDBACK, p.encode_feedback(pattern, counter))

    async def show_alert(self, link: Link, level: p.AlertLevel, text: str) -> bool:
        await link.write(FEEDBACK, p.encode_alert_feedback(level))
        return True

    def tick(self, host: Host, now: float, workers: Mapping[str, str]) -> None:
        for dev_id in [d for d in self._watch if d not in workers]:
            del self._watch[dev_id]  # unpaired
        for dev_id, watch in self._watch.items():
            late = now - watch.last - watch.interval_s
            if not watch.overdue and late > max(MIN_GRACE_S, GRACE * watch.interval_s):
                watch.overdue = True
                host.submit(
                    "worker.overdue",
                    dev_id,
                    {
                        "device": dev_id,
                        "worker": workers[dev_id],
                        "state": "overdue",
                        "silent_s": round(now - watch.last, 1),
                        "interval_s": watch.interval_s,
                    },
                )


KIND = ManDownTag
