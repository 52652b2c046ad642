"""The gridedge GATT profiles as sans-IO codecs: characteristic bytes in, typed events out.

All multi-byte fields are little-endian, as everywhere in GATT. A value that does not
decode is a `Rejected`, never an exception (a stranger's or a broken device's bytes
are data). `SosCounterGuard` is why a replayed or repeated notification is never a
second alarm: every event carries a 16-bit counter compared in serial-number
arithmetic (RFC 1982) within a boot, and an authenticated event (version 2) also its
device's boot count, so an old event replayed is never new; a version 1 event's
reboot is recognised by its uptime going back.

Counted events (an SOS button's, a man-down tag's) are authenticated: version 2 carries
an 8-byte tag, HMAC-SHA256 under the wearable's enrolled 16-byte key over a label and
the event's first 12 bytes, so a device with the right address but not the key can
neither raise nor cancel an alarm (`Reason.FORGED`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

from drivers.nmea0183 import Reason, Rejected

PROFILE_VERSION = 1
AUTH_VERSION = 2  # a counted event with its boot count and tag
KEY_BYTES = 16
TAG_LABEL = b"gridedge/event/v2"


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
    SENT = 5  # the alarm left the gateway: the broker acknowledged it, or another bearer took it


class AlertLevel(enum.IntEnum):
    """An `alert.broadcast`'s level: how insistently a wearable shows it."""

    INFO = 1
    WARNING = 2
    EMERGENCY = 3

    @classmethod
    def named(cls, name: object) -> AlertLevel | None:
        return cls.__members__.get(name.upper()) if isinstance(name, str) else None


# The *alert* feedback pattern per level (repeat, duration_ms): a button or tag has no
# screen, so the level is in how long and how often it buzzes.
ALERT_PATTERN = {
    AlertLevel.INFO: (1, 300),
    AlertLevel.WARNING: (3, 600),
    AlertLevel.EMERGENCY: (10, 1000),
}
ALERT_TEXT_MAX = 180  # bytes of UTF-8 an alert's text may take on a camera's screen


def encode_alert_feedback(level: AlertLevel) -> bytes:
    """The *alert* feedback a button or tag shows for an alert of `level`."""
    repeat, duration_ms = ALERT_PATTERN[level]
    return encode_feedback(Feedback.ALERT, repeat=repeat, duration_ms=duration_ms)


def encode_alert_text(level: AlertLevel, text: str) -> bytes:
    """Camera Alert Text: u8 level, then the text in UTF-8, cut on a character boundary."""
    raw = text.encode()[:ALERT_TEXT_MAX]
    return bytes([level]) + raw.decode(errors="ignore").encode()


def parse_alert_text(raw: bytes) -> tuple[AlertLevel, str] | Rejected:
    if not 1 <= len(raw) <= ALERT_TEXT_MAX + 1:
        return _reject(f"alert text is 1..{ALERT_TEXT_MAX + 1} bytes, got {len(raw)}", raw)
    try:
        return AlertLevel(raw[0]), raw[1:].decode()
    except (ValueError, UnicodeDecodeError):
        return _reject("alert text: bad level or not UTF-8", raw)


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
    boot: int | None = None  # version 2: the device's boot count (kept in its flash)


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
_SOS2 = struct.Struct("<BBHII8s")  # version 2, type, counter, uptime_ms, boot, tag
_SOS2_HEAD = _SOS2.size - 8
_FEEDBACK = struct.Struct("<BBHH")  # pattern, repeat, duration_ms, counter of the event answered
_CAM_STATE = struct.Struct("<BBBB")  # version, state, storage %, battery %
_MARK = struct.Struct("<II32sI")  # clip id, offset ms, sha256, reserved
_CONTROL = struct.Struct("<BB")  # command, reason


def _reject(detail: str, raw: bytes) -> Rejected:
    return Rejected(Reason.BAD_VALUE, bytes(raw[:64]), detail)


@dataclass(frozen=True, slots=True)
class Counted:
    """A counted event's fields, whatever its version."""

    kind: int
    counter: int
    uptime_ms: int
    boot: int | None  # None: version 1 (unauthenticated)


def event_tag(key: bytes, head: bytes) -> bytes:
    """The 8-byte tag of a version 2 event's first 12 bytes under the wearable's key."""
    return hmac.new(key, TAG_LABEL + head, hashlib.sha256).digest()[:8]


def parse_counted(raw: bytes, what: str, key: bytes | None = None) -> Counted | Rejected:
    """A counted event: with `key`, only an authenticated one (version 2, its tag checked
    in constant time); without (a wearable enrolled `insecure`), only version 1."""
    raw = bytes(raw)
    if key is None:
        if len(raw) != _SOS.size:
            return Rejected(Reason.MALFORMED, raw[:64], f"{what} is {_SOS.size} bytes, got {len(raw)}")
        version, kind, counter, uptime = _SOS.unpack(raw)
        if version != PROFILE_VERSION:
            return _reject(f"{what} profile version {version} (no key enrolled for it)", raw)
        return Counted(kind, counter, uptime, None)
    if len(raw) == _SOS.size and raw[0] == PROFILE_VERSION:
        # a well-formed unauthenticated event: a keyed wearable never sends one, so whoever
        # sent it lacks the key (or is downgrading)
        return Rejected(
            Reason.FORGED, raw[:64], f"{what} not authenticated (version 1 from a keyed wearable)"
        )
    if len(raw) != _SOS2.size or raw[0] != AUTH_VERSION:
        return Rejected(
            Reason.MALFORMED, raw[:64], f"{what} is {_SOS2.size} bytes of version 2, got {len(raw)}"
        )
    version, kind, counter, uptime, boot, tag = _SOS2.unpack(raw)
    if not hmac.compare_digest(tag, event_tag(key, raw[:_SOS2_HEAD])):
        return Rejected(Reason.FORGED, raw[:64], f"{what} tag does not verify under the enrolled key")
    return Counted(kind, counter, uptime, boot)


def encode_counted(
    kind: int, counter: int, uptime_ms: int, *, key: bytes | None = None, boot: int = 0
) -> bytes:
    """A counted event as a wearable sends it: version 2 with its tag when it has a key."""
    if key is None:
        return _SOS.pack(PROFILE_VERSION, kind, counter & 0xFFFF, uptime_ms & 0xFFFFFFFF)
    head = _SOS2.pack(AUTH_VERSION, kind, counter & 0xFFFF, uptime_ms & 0xFFFFFFFF, boot & 0xFFFFFFFF, b"")
    return head[:_SOS2_HEAD] + event_tag(key, head[:_SOS2_HEAD])


def parse_sos_event(raw: bytes, key: bytes | None = None) -> SosEvent | Rejected:
    fields = parse_counted(raw, "SOS event", key)
    if isinstance(fields, Rejected):
        return fields
    try:
        return SosEvent(SosEventType(fields.kind), fields.counter, fields.uptime_ms, fields.boot)
    except ValueError:
        return _reject(f"SOS event type {fields.kind}", raw)


def encode_sos_event(event: SosEvent, key: bytes | None = None) -> bytes:
    return encode_counted(event.type, event.counter, event.uptime_ms, key=key, boot=event.boot or 0)


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


Last = tuple[int, int, int | None, int]  # counter, uptime_ms, boot (None: version 1), window
WINDOW = 64  # counters behind the last one whose fate is remembered (a bit each)


class SosCounterGuard:
    """Accepts each event once: a replay, a repeat or an old counter is not a new event.

    Within a boot (an authenticated event's boot count), the counters of the WINDOW
    events before the last committed one are remembered as committed or not, as in
    IPsec's anti-replay window: a button resends every event until it is answered, so
    an event whose notification was lost may come back after a newer one was committed.
    It is new if it was never committed (a press that must not be lost), a repeat to
    answer again if it was, and stale beyond the window."""

    def __init__(self, last: dict[str, Last] | None = None) -> None:
        self._last: dict[str, Last] = dict(last or {})  # device -> its last event committed

    def _verdict(self, device: str, event: SosEvent) -> str:
        """ "new", "repeat" (committed: answer it again) or "stale"."""
        last = self._last.get(device)
        if last is None:
            return "new"
        counter, uptime, boot, window = last
        if event.boot is not None and boot is not None:
            # authenticated: the boot count only goes forward; an older boot is a replay
            if event.boot != boot:
                return "new" if event.boot > boot else "stale"
        elif event.boot is not None:
            return "new"  # its first authenticated event after version 1 ones
        elif event.uptime_ms < uptime:
            return "new"  # version 1: its clock went back, a new boot
        ahead = (event.counter - counter) % 65536
        if 0 < ahead < 32768:  # RFC 1982 serial number arithmetic
            return "new"
        if ahead == 0:
            return "repeat" if (event.uptime_ms, event.boot) == (uptime, boot) else "stale"
        behind = (counter - event.counter) % 65536
        if event.boot is None or behind > WINDOW:
            return "stale"
        return "repeat" if window >> (behind - 1) & 1 else "new"

    def fresh(self, device: str, event: SosEvent, *, record: bool = True) -> bool:
        """Whether the event is new; `record=False` asks without remembering it (the gateway
        remembers an alarm only once it is committed, so a failed commit is retried)."""
        if self._verdict(device, event) != "new":
            return False
        if record:
            self.record(device, event)
        return True

    def same(self, device: str, event: SosEvent) -> bool:
        """Whether `event` was committed already (a resend: answer it again)."""
        return self._verdict(device, event) == "repeat"

    def record(self, device: str, event: SosEvent) -> None:
        """`event` is committed (it was new)."""
        self._last[device] = self.after(device, event)

    def after(self, device: str, event: SosEvent) -> Last:
        """What the guard holds for `device` once `event` (a new one) is committed: stored
        with the event, in its transaction, so a restart finds the same."""
        last = self._last.get(device)
        if last is None or event.boot is None or last[2] != event.boot:
            return event.counter, event.uptime_ms, event.boot, 0
        counter, uptime, boot, window = last
        ahead = (event.counter - counter) % 65536
        if 0 < ahead < 32768:
            # the previous last is committed: bit 0 is now the one just behind the new last
            window = ((window << ahead) | (1 << (ahead - 1))) & ((1 << WINDOW) - 1)
            return event.counter, event.uptime_ms, event.boot, window
        behind = (counter - event.counter) % 65536
        return counter, uptime, boot, window | (1 << (behind - 1))

    def snapshot(self) -> dict[str, Last]:
        return dict(self._last)
