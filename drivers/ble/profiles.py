"""The gridedge GATT profiles as sans-IO codecs: characteristic bytes in, typed events out.

All multi-byte fields are little-endian, as everywhere in GATT. A value that does not
decode is a `Rejected`, never an exception (a stranger's or a broken device's bytes
are data). `SosCounterGuard` is why a replayed or repeated notification is never a
second alarm: every event carries a 16-bit counter compared in serial-number
arithmetic (RFC 1982), and a device reboot is recognised by its uptime going back.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from drivers.nmea0183 import Reason, Rejected

PROFILE_VERSION = 1


class SosEventType(enum.IntEnum):
    PRESS = 1  # a short press: a check-in, not an alarm
    LONG_PRESS = 2  # held for 2 s or more: the alarm
    TRIPLE_PRESS = 3  # three presses within 2 s: cancel the worker's own alarm
    TEST = 4  # the test procedure; never an alarm


class Feedback(enum.IntEnum):
    OFF = 0
    RECEIVED = 1  # the gateway has the alarm on disk
    ACKNOWLEDGED = 2  # the platform acknowledged it (sos.ack): help is coming
    ALERT = 3  # a broadcast alert (typhoon recall...)
    CANCELLED = 4


class CameraState(enum.IntEnum):
    IDLE = 0
    RECORDING = 1
    ERROR = 2


class CameraCommand(enum.IntEnum):
    START = 1
    STOP = 2
    MARK = 3
    ALERT = 4  # signal a broadcast alert on the camera's LED/buzzer


class CameraReason(enum.IntEnum):
    SOS = 1
    PLATFORM = 2
    MANUAL = 3


@dataclass(frozen=True, slots=True)
class SosEvent:
    type: SosEventType
    counter: int  # 0..65535, +1 per event, wraps
    uptime_ms: int  # device time since its last boot


@dataclass(frozen=True, slots=True)
class CameraStatus:
    state: CameraState
    storage_pct: int
    battery_pct: int


@dataclass(frozen=True, slots=True)
class ClipMark:
    clip_id: int
    offset_ms: int
    sha256: bytes


_SOS = struct.Struct("<BBHI")  # version, type, counter, uptime_ms
_FEEDBACK = struct.Struct("<BBHH")  # pattern, repeat, duration_ms, counter of the event answered
_CAM_STATE = struct.Struct("<BBBB")  # version, state, storage %, battery %
_MARK = struct.Struct("<II32sI")  # clip id, offset ms, sha256, reserved
_CONTROL = struct.Struct("<BB")  # command, reason


def _reject(detail: str, raw: bytes) -> Rejected:
    return Rejected(Reason.BAD_VALUE, bytes(raw[:64]), detail)


def parse_counted(raw: bytes, what: str) -> tuple[int, int, int, int] | Rejected:
    """A counted event's 8 bytes (version, type, counter, uptime_ms), version checked."""
    if len(raw) != _SOS.size:
        return Rejected(Reason.MALFORMED, bytes(raw[:64]), f"{what} is {_SOS.size} bytes, got {len(raw)}")
    version, kind, counter, uptime = _SOS.unpack(raw)
    if version != PROFILE_VERSION:
        return _reject(f"{what} profile version {version}", raw)
    return version, kind, counter, uptime


def encode_counted(kind: int, counter: int, uptime_ms: int) -> bytes:
    return _SOS.pack(PROFILE_VERSION, kind, counter & 0xFFFF, uptime_ms & 0xFFFFFFFF)


def parse_sos_event(raw: bytes) -> SosEvent | Rejected:
    fields = parse_counted(raw, "SOS event")
    if isinstance(fields, Rejected):
        return fields
    _version, kind, counter, uptime = fields
    try:
        return SosEvent(SosEventType(kind), counter, uptime)
    except ValueError:
        return _reject(f"SOS event type {kind}", raw)


def encode_sos_event(event: SosEvent) -> bytes:
    return encode_counted(event.type, event.counter, event.uptime_ms)


@dataclass(frozen=True, slots=True)
class FeedbackWrite:
    pattern: Feedback
    repeat: int
    duration_ms: int
    counter: int  # the SOS event this answers (received/cancelled/acknowledged); 0 for an alert


def encode_feedback(pattern: Feedback, counter: int = 0, *, repeat: int = 3, duration_ms: int = 500) -> bytes:
    return _FEEDBACK.pack(
        pattern, max(0, min(255, repeat)), max(0, min(65535, duration_ms)), counter & 0xFFFF
    )


def parse_feedback(raw: bytes) -> FeedbackWrite | Rejected:
    if len(raw) != _FEEDBACK.size:
        return Rejected(
            Reason.MALFORMED, bytes(raw[:64]), f"feedback is {_FEEDBACK.size} bytes, got {len(raw)}"
        )
    pattern, repeat, duration, counter = _FEEDBACK.unpack(raw)
    try:
        return FeedbackWrite(Feedback(pattern), repeat, duration, counter)
    except ValueError:
        return _reject(f"feedback pattern {pattern}", raw)


def parse_camera_state(raw: bytes) -> CameraStatus | Rejected:
    if len(raw) != _CAM_STATE.size:
        return Rejected(Reason.MALFORMED, bytes(raw[:64]), "camera state length")
    version, state, storage, battery = _CAM_STATE.unpack(raw)
    if version != PROFILE_VERSION or storage > 100 or battery > 100:
        return _reject("camera state out of range", raw)
    try:
        return CameraStatus(CameraState(state), storage, battery)
    except ValueError:
        return _reject(f"camera state {state}", raw)


def encode_camera_state(status: CameraStatus) -> bytes:
    return _CAM_STATE.pack(PROFILE_VERSION, status.state, status.storage_pct, status.battery_pct)


def parse_clip_mark(raw: bytes) -> ClipMark | Rejected:
    if len(raw) != _MARK.size:
        return Rejected(Reason.MALFORMED, bytes(raw[:64]), "clip mark length")
    clip, offset, digest, _reserved = _MARK.unpack(raw)
    return ClipMark(clip, offset, digest)


def encode_clip_mark(mark: ClipMark) -> bytes:
    return _MARK.pack(mark.clip_id, mark.offset_ms, mark.sha256, 0)


def encode_camera_control(command: CameraCommand, reason: CameraReason) -> bytes:
    return _CONTROL.pack(command, reason)


class SosCounterGuard:
    """Accepts each event once: a replay, a repeat or an old counter is not a new event."""

    def __init__(self, last: dict[str, tuple[int, int]] | None = None) -> None:
        self._last: dict[str, tuple[int, int]] = dict(last or {})  # device -> (counter, uptime_ms)

    def fresh(self, device: str, event: SosEvent, *, record: bool = True) -> bool:
        """Whether the event is new; `record=False` asks without remembering it (the gateway
        remembers an alarm only once it is committed, so a failed commit is retried)."""
        last = self._last.get(device)
        if last is not None:
            counter, uptime = last
            rebooted = event.uptime_ms < uptime  # its clock went back: a new boot, counters restart
            ahead = (event.counter - counter) % 65536
            if not rebooted and not 0 < ahead < 32768:  # RFC 1982 serial number arithmetic
                return False
        if record:
            self.record(device, event)
        return True

    def record(self, device: str, event: SosEvent) -> None:
        self._last[device] = (event.counter, event.uptime_ms)

    def last(self, device: str) -> tuple[int, int] | None:
        return self._last.get(device)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return dict(self._last)
