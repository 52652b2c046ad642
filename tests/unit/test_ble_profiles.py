"""The GATT profile codecs and the SOS replay guard (docs/ble-profiles.md)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from drivers.ble import profiles as p
from drivers.nmea0183 import Rejected


def test_sos_event_round_trip_and_layout() -> None:
    ev = p.SosEvent(p.SosEventType.LONG_PRESS, 513, 123_456)
    raw = p.encode_sos_event(ev)
    assert raw == bytes([1, 2, 0x01, 0x02]) + (123_456).to_bytes(4, "little")
    assert p.parse_sos_event(raw) == ev


def test_bad_sos_values_are_rejected() -> None:
    assert isinstance(p.parse_sos_event(b"\x01\x02\x00"), Rejected)  # short
    assert isinstance(p.parse_sos_event(bytes([2, 2, 0, 0, 0, 0, 0, 0])), Rejected)  # version 2
    assert isinstance(p.parse_sos_event(bytes([1, 9, 0, 0, 0, 0, 0, 0])), Rejected)  # type 9


def test_replayed_or_repeated_counter_is_not_a_second_alarm() -> None:
    g = p.SosCounterGuard()
    first = p.SosEvent(p.SosEventType.LONG_PRESS, 10, 5000)
    assert g.fresh("sos-1", first)
    assert not g.fresh("sos-1", first)  # the same notification again (a retransmission)
    assert not g.fresh("sos-1", p.SosEvent(p.SosEventType.LONG_PRESS, 9, 6000))  # an old one replayed
    assert g.fresh("sos-1", p.SosEvent(p.SosEventType.TRIPLE_PRESS, 11, 7000))
    assert g.fresh("sos-2", first)  # counters are per device


def test_counter_wraps_and_reboot_restarts() -> None:
    g = p.SosCounterGuard()
    assert g.fresh("b", p.SosEvent(p.SosEventType.PRESS, 65535, 10_000))
    assert g.fresh("b", p.SosEvent(p.SosEventType.PRESS, 0, 11_000))  # wrapped
    assert g.fresh("b", p.SosEvent(p.SosEventType.LONG_PRESS, 0, 50))  # rebooted: uptime went back


def test_camera_codecs() -> None:
    status = p.CameraStatus(p.CameraState.RECORDING, 73, 41)
    assert p.parse_camera_state(p.encode_camera_state(status)) == status
    mark = p.ClipMark(7, 120_000, hashlib.sha256(b"clip").digest())
    assert p.parse_clip_mark(p.encode_clip_mark(mark)) == mark
    assert p.encode_camera_control(p.CameraCommand.START, p.CameraReason.SOS) == b"\x01\x01"
    assert isinstance(p.parse_camera_state(bytes([1, 1, 101, 0])), Rejected)
    assert p.parse_feedback(p.encode_feedback(p.Feedback.RECEIVED, 70000)) == p.FeedbackWrite(
        p.Feedback.RECEIVED, 3, 500, 70000 & 0xFFFF
    )
    assert isinstance(p.parse_feedback(b"\x01\x03\xf4\x01"), Rejected)  # the old 4-byte form


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_reject(raw: bytes) -> None:
    assert isinstance(p.parse_sos_event(raw), p.SosEvent | Rejected)
    assert isinstance(p.parse_camera_state(raw), p.CameraStatus | Rejected)
    assert isinstance(p.parse_clip_mark(raw), p.ClipMark | Rejected)
    assert isinstance(p.parse_feedback(raw), p.FeedbackWrite | Rejected)
