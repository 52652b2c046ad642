"""The counted-event path the wearable kinds share (docs/ble-profiles.md): an event is
checked against the device's counters (a repeat or a replay is not a second alarm),
committed to the outbox (fsync) with what the guard will hold once it is, and only then is
the device told (feedback carrying the event's counter). An alarm is also kept by its seq,
so a platform's `sos.ack` finds the counter to answer after any restart."""

from __future__ import annotations

import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.ble import profiles as p
from drivers.ble.kinds.base import Link
from drivers.ble.session import WearableStats, ble_errors
from floor.errors import TransientError
from floor.seqkey import seq_key

log = logging.getLogger(__name__)

KEEP_ALARMS = 256  # this run's alarms by seq, in memory (every one is on disk too)


class Commit(Protocol):
    def __call__(
        self,
        kind: str,
        src: str,
        data: Mapping[str, Any],
        *,
        state: tuple[str, bytes] | None = None,
        seq_state: tuple[str, bytes] | None = None,
    ) -> Awaitable[int | None]: ...


GUARD_KEY = "ble.sos/"  # outbox state records: the last SOS event committed per button
# counter, uptime_ms, boot, 1 when the event carried a boot count, the window of committed
# counters behind it (profiles.SosCounterGuard)
_GUARD = struct.Struct("<HIIBQ")
_GUARD_V1 = struct.Struct("<HI")  # counter, uptime_ms: as written before authenticated events
# An alarm's record, committed with it and keyed by its seq (Pending.seq_state): what an
# sos.ack for it needs after any restart: the counter to answer, on which wearable
ALARM_KEY = "ble.alarm/"
CANCEL_KEY = "ble.cancel/"  # a cancel's record, the same shape, keyed by the cancel's seq
_ALARM = struct.Struct("<H")  # counter, then the wearable's id (utf-8)


@dataclass(frozen=True, slots=True)
class Alarm:
    device: str
    counter: int

    def encode(self) -> bytes:
        return _ALARM.pack(self.counter) + self.device.encode()

    @classmethod
    def decode(cls, raw: bytes) -> Alarm | None:
        if len(raw) <= _ALARM.size:
            return None
        try:
            return cls(raw[_ALARM.size :].decode(), _ALARM.unpack_from(raw)[0])
        except UnicodeDecodeError:
            return None


def _guard_record(raw: bytes) -> p.Last | None:
    if len(raw) == _GUARD.size:
        counter, uptime, boot, has_boot, window = _GUARD.unpack(raw)
        return counter, uptime, boot if has_boot else None, window
    if len(raw) == _GUARD_V1.size:
        counter, uptime = _GUARD_V1.unpack(raw)
        return counter, uptime, None, 0
    return None


def _guard_bytes(last: p.Last) -> bytes:
    counter, uptime, boot, window = last
    return _GUARD.pack(counter, uptime, boot or 0, boot is not None, window)


class CountedEvents:
    """The counter guard, restored from the outbox, and the alarms by seq."""

    def __init__(
        self,
        *,
        commit: Commit,
        read_state: Callable[[str], Awaitable[dict[str, bytes]]],
        stats: dict[str, WearableStats],
    ) -> None:
        self._commit = commit
        self._read_state = read_state
        self._stats = stats
        self.guard: p.SosCounterGuard | None = None  # restored from the outbox at the first run
        self._alarms: OrderedDict[int, Alarm] = OrderedDict()  # this run's alarms by seq (the rest on disk)

    async def restore(self) -> None:
        """The last committed event of every button, as the outbox holds it (once)."""
        if self.guard is None:
            stored = await self._read_state(GUARD_KEY)
            records = {k[len(GUARD_KEY) :]: _guard_record(v) for k, v in stored.items()}
            self.guard = p.SosCounterGuard({k: r for k, r in records.items() if r is not None})

    async def event(
        self,
        link: Link,
        ev: p.SosEvent,
        *,
        kind: str,
        data: dict[str, Any],
        answer: p.Feedback,
        feedback: str,
        alarm: bool,
        cancel: bool = False,
    ) -> int | None:
        """New events committed as `kind` with their counter, then answered; repeats
        answered again. The seq when it was new."""
        w, st = link.w, self._stats[link.w.id]
        guard = self.guard
        if guard is None:
            raise TransientError("counter guard not restored yet")  # restored before any session
        if not guard.fresh(w.id, ev, record=False):
            st.repeats += 1
            if guard.same(w.id, ev):
                # The device did not hear our answer (it resends until it does): answer again.
                await feedback_to(link, feedback, answer, ev.counter)
            return None
        st.events += 1
        st.last_event, st.last_event_ms = data.get("event", kind), time.time_ns() // 1_000_000
        data |= {"counter": ev.counter, "uptime_ms": ev.uptime_ms}
        if ev.boot is not None:
            data |= {"boot": ev.boot, "authenticated": True}
        # Committed (fsync) together with the event's counter, in one transaction: after any
        # crash the gateway either has both (a resend is a repeat) or neither (a resend is new).
        # what the guard will hold once this is committed, committed with it
        state = (GUARD_KEY + w.id, _guard_bytes(guard.after(w.id, ev)))
        mark = ALARM_KEY if alarm else CANCEL_KEY if cancel else None
        by_seq = None if mark is None else (mark, Alarm(w.id, ev.counter).encode())
        seq = await self._commit(kind, w.id, data, state=state, seq_state=by_seq)
        guard.record(w.id, ev)
        await feedback_to(link, feedback, answer, ev.counter)
        if alarm:
            st.alarms += 1
            if seq is not None:
                self._alarms[seq] = Alarm(w.id, ev.counter)
                while len(self._alarms) > KEEP_ALARMS:
                    self._alarms.popitem(last=False)
        return seq if seq is not None else 0

    async def cancelled_since(self, device: str, alarm_seq: int) -> bool:
        """Whether the wearable's worker cancelled after the alarm committed as `alarm_seq`."""
        for key, raw in (await self._read_state(CANCEL_KEY)).items():
            seq = key[len(CANCEL_KEY) :]
            cancel = Alarm.decode(raw)
            if cancel is not None and cancel.device == device and seq.isdigit() and int(seq) > alarm_seq:
                return True
        return False

    async def alarm(self, alarm_seq: int) -> Alarm | None:
        """The alarm committed as `alarm_seq` (this run's, or one kept on disk), or None."""
        hit = self._alarms.get(alarm_seq)
        if hit is not None:
            return hit
        raw = (await self._read_state(seq_key(ALARM_KEY, alarm_seq))).get(seq_key(ALARM_KEY, alarm_seq))
        return None if raw is None else Alarm.decode(raw)


async def feedback_to(link: Link, char: str, pattern: p.Feedback, counter: int) -> bool:
    try:
        await link.write(char, p.encode_feedback(pattern, counter))
        return True
    except ble_errors() as exc:
        log.warning("ble: %s: feedback not written: %r", link.w.id, exc)
        return False
