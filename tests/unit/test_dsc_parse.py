"""DSC: the sample sentences give what their sources expect; bad input is counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.dsc.parse import DscCall, DscParser
from drivers.nmea0183 import Reason, Rejected


def sentences(corpora: Path) -> list[bytes]:
    text = (corpora / "dsc/dsc_dse_samples.nmea").read_bytes()
    return [ln for ln in text.splitlines() if ln.startswith(b"$")]


def run(lines: list[bytes], now: int = 0) -> list[DscCall | Rejected]:
    p = DscParser()
    out = p.feed(b"\r\n".join(lines) + b"\r\n", now=now)
    return out + p.poll(now + 10_000)


def calls(events: list[DscCall | Rejected]) -> list[DscCall]:
    return [e for e in events if isinstance(e, DscCall)]


def test_real_capture_with_dse_refines_position(corpora: Path) -> None:
    (call,) = calls(run(sentences(corpora)[:2]))
    assert not call.distress
    d = call.data
    assert d["mmsi"] == 338040079 and d["telecommand"] == "position_update"
    # 42-31N 083-12W plus DSE +0.4650' lat, +0.4437' lon
    assert d["lat"] == pytest.approx(42 + 31.4650 / 60, abs=1e-6)
    assert d["lon"] == pytest.approx(-(83 + 12.4437 / 60), abs=1e-6)


def test_signal_k_distress_adrift_refined_by_dse(corpora: Path) -> None:
    (call,) = calls(run(sentences(corpora)[2:4]))
    assert call.distress
    d = call.data
    assert d["mmsi"] == 338040079 and d["nature"] == "adrift" and d["call"] == "alert"
    assert d["lat"] == pytest.approx(42.5243, abs=1e-4) and d["lon"] == pytest.approx(-83.2075, abs=1e-4)
    assert d["utc_hhmm"] == "2019"


def test_self_cancel(corpora: Path) -> None:
    (call,) = calls(run([sentences(corpora)[4]]))
    assert call.distress and call.data["cancel"] is True and call.data["mmsi"] == 338158137


def test_routine_position_reply_is_a_call(corpora: Path) -> None:
    (call,) = calls(run([sentences(corpora)[5]]))
    assert not call.distress and call.data["mmsi"] == 338158137 and "lat" in call.data


def test_empty_sentence_and_unknown_telecommand_are_counted(corpora: Path) -> None:
    s = sentences(corpora)
    events = run([s[6], s[7]])
    assert [(e.reason, e.detail) for e in events if isinstance(e, Rejected)] == [
        (Reason.MALFORMED, "empty or short DSC sentence"),
        (Reason.UNSUPPORTED, "telecommand '22'"),
    ]


def test_safety_and_urgency_calls(corpora: Path) -> None:
    got = calls(run(sentences(corpora)[8:10]))
    assert [c.data["category"] for c in got] == ["safety", "urgency"]
    assert not any(c.distress for c in got)


def test_quadrants(corpora: Path) -> None:
    se, sw = calls(run(sentences(corpora)[10:12]))
    assert se.data["lat"] < 0 < se.data["lon"]
    assert sw.data["lat"] < 0 and sw.data["lon"] < 0


NATURES = [
    "fire",
    "flooding",
    "collision",
    "grounding",
    "listing",
    "sinking",
    "undesignated",
    "abandoning",
    "piracy",
    "mob",
    "epirb",
    "undesignated",
]


def test_every_nature_of_distress_is_a_distress(corpora: Path) -> None:
    got = calls(run(sentences(corpora)[12:24]))
    assert all(c.distress for c in got)
    assert [c.data["nature"] for c in got] == NATURES
    assert got[-1].data["nature_code"] == "99"  # unassigned code: still a distress, raw code kept


def test_padded_fields_and_lowercase_checksum(corpora: Path) -> None:
    a, b, c = calls(run(sentences(corpora)[24:27]))
    assert a.distress and a.data["nature"] == "adrift" and a.data["mmsi"] == 338040079
    assert b.data.get("cancel") is True
    assert not c.distress


def test_invalid_ack_flag_is_rejected(corpora: Path) -> None:
    events = run([sentences(corpora)[27]])
    assert [e.reason for e in events if isinstance(e, Rejected)] == [Reason.BAD_VALUE]


def test_dse_without_dsc_gives_nothing(corpora: Path) -> None:
    assert run([sentences(corpora)[3]]) == []


def test_call_waiting_for_dse_is_released_by_time_or_flush(corpora: Path) -> None:
    p = DscParser(dse_wait_ms=500)
    distress = sentences(corpora)[2]  # expansion flag set
    assert p.feed(distress + b"\r\n", now=0) == [] and p.waiting
    assert p.poll(100) == []
    (late,) = p.poll(600)
    assert isinstance(late, DscCall) and late.distress and "position_enhanced" not in late.data
    assert p.feed(distress + b"\r\n", now=1000) == []
    (flushed,) = p.flush()
    assert isinstance(flushed, DscCall) and flushed.distress


def test_relay_and_acknowledgement() -> None:
    def s(body: str) -> bytes:
        c = 0
        for ch in body.encode():
            c ^= ch
        return f"${body}*{c:02X}".encode()

    relay = s("CDDSC,16,0022222220,12,12,00,0223108312,1200,3380400790,01,S,")
    ack = s("CDDSC,16,0022222220,12,10,00,0223108312,1200,3380400790,,S,")
    r, a = calls(run([relay, ack]))
    assert r.distress and r.data["call"] == "relay" and r.data["relay_of"] == 338040079
    assert r.data["nature"] == "flooding" and r.data["mmsi"] == 2222222
    assert a.distress and a.data["call"] == "ack" and a.data["ack_of"] == 338040079
