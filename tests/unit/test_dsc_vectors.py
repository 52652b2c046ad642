"""DSC with the project's own hand-made sentences (a Jiangmen boat's radio), so every case
runs in a checkout without ../shared/corpora; the corpus tests add real captures on top."""

from __future__ import annotations

import pytest

from drivers.dsc.parse import DscCall, DscParser
from drivers.nmea0183 import Reason, Rejected


def s(body: str, *, lower: bool = False) -> bytes:
    """`CDDSC,...` with its checksum (IEC 61162-1: XOR of the bytes between $ and *)."""
    c = 0
    for ch in body.replace(" ", "").encode():
        c ^= ch
    hh = f"{c:02x}" if lower else f"{c:02X}"
    return f"${body}*{hh}".encode()


def run(lines: list[bytes], now: int = 0) -> list[DscCall | Rejected]:
    p = DscParser()
    out = p.feed(b"\r\n".join(lines) + b"\r\n", now=now)
    return out + p.poll(now + 10_000)


def calls(events: list[DscCall | Rejected]) -> list[DscCall]:
    return [e for e in events if isinstance(e, DscCall)]


# 21-52N 112-48E, the mouth of the Tan river; MMSI 412440104 with the trailing 0
HERE = "0215211248"
DISTRESS = s(f"CDDSC,12,4124401040,12,06,00,{HERE},0610,,,S,E")
DISTRESS_DSE = s("CDDSE,1,1,A,4124401040,00,50002500")


def test_position_update_refined_by_its_dse() -> None:
    call_ = s(f"CDDSC,20,4124401030,00,21,26,{HERE},0830,,,B,E")
    dse = s("CDDSE,1,1,A,4124401030,00,12345678")
    (call,) = calls(run([call_, dse]))
    assert not call.distress
    assert call.data["mmsi"] == 412440103 and call.data["telecommand"] == "position_update"
    assert call.data["lat"] == pytest.approx(21 + 52.1234 / 60, abs=1e-6)
    assert call.data["lon"] == pytest.approx(112 + 48.5678 / 60, abs=1e-6)


def test_distress_adrift_refined_by_its_dse() -> None:
    (call,) = calls(run([DISTRESS, DISTRESS_DSE]))
    assert call.distress
    d = call.data
    assert d["mmsi"] == 412440104 and d["nature"] == "adrift" and d["call"] == "alert"
    assert d["lat"] == pytest.approx(21 + 52.5 / 60, abs=1e-6)
    assert d["lon"] == pytest.approx(112 + 48.25 / 60, abs=1e-6)
    assert d["utc_hhmm"] == "0610"


def test_self_cancel() -> None:
    (call,) = calls(run([s(f"CDDSC,12,4124401050,12,06,00,{HERE},0612,4124401050,,S,")]))
    assert call.distress and call.data["cancel"] is True and call.data["mmsi"] == 412440105


def test_routine_position_reply_is_a_call() -> None:
    (call,) = calls(run([s(f"CDDSC,20,4124401050,00,21,26,{HERE},0700,,,B,")]))
    assert not call.distress and call.data["mmsi"] == 412440105 and "lat" in call.data


def test_empty_sentence_and_unknown_telecommand_are_counted() -> None:
    events = run([s("CDDSC,,,,,,,,,,,"), s(f"CDDSC,20,4124401050,00,22,26,{HERE},0700,,,B,")])
    assert [(e.reason, e.detail) for e in events if isinstance(e, Rejected)] == [
        (Reason.MALFORMED, "empty or short DSC sentence"),
        (Reason.UNSUPPORTED, "telecommand '22'"),
    ]


def test_safety_and_urgency_calls() -> None:
    got = calls(run([s(f"CDDSC,20,4124401050,{cat},00,00,{HERE},0700,,,B,") for cat in ("08", "10")]))
    assert [c.data["category"] for c in got] == ["safety", "urgency"]
    assert not any(c.distress for c in got)


def test_quadrants() -> None:
    se, sw = calls(run([s(f"CDDSC,12,4124401040,12,06,00,{q}215211248,0610,,,S,") for q in (2, 3)]))
    assert se.data["lat"] < 0 < se.data["lon"]
    assert sw.data["lat"] < 0 and sw.data["lon"] < 0


@pytest.mark.parametrize(
    ("code", "nature"),
    [
        ("00", "fire"),
        ("01", "flooding"),
        ("02", "collision"),
        ("03", "grounding"),
        ("04", "listing"),
        ("05", "sinking"),
        ("07", "undesignated"),
        ("08", "abandoning"),
        ("09", "piracy"),
        ("10", "mob"),
        ("12", "epirb"),
        ("99", "undesignated"),  # unassigned: still a distress, the raw code kept
    ],
)
def test_every_nature_of_distress_is_a_distress(code: str, nature: str) -> None:
    (call,) = calls(run([s(f"CDDSC,12,4124401040,12,{code},00,{HERE},0610,,,S,")]))
    assert call.distress and call.data["nature"] == nature and call.data["nature_code"] == code


def test_padded_fields_and_a_lowercase_checksum() -> None:
    a, b = calls(
        run(
            [
                s(f"CDDSC,12,4124401040,12,06,00,{HERE},0610, ,  , S,  ", lower=True),
                s(f"CDDSC,12,4124401050,12,06,00,{HERE},0612,4124401050, , S,    ", lower=True),
            ]
        )
    )
    assert a.distress and a.data["nature"] == "adrift" and a.data["mmsi"] == 412440104
    assert b.data.get("cancel") is True


def test_a_bad_acknowledgement_flag_is_rejected() -> None:
    events = run([s(f"CDDSC,20,4124401050,00,21,26,{HERE},0700,,,x,")])
    assert [e.reason for e in events if isinstance(e, Rejected)] == [Reason.BAD_VALUE]


def test_a_dse_without_its_dsc_gives_nothing() -> None:
    assert run([DISTRESS_DSE]) == []


def test_a_call_waiting_for_its_dse_is_released_by_time_or_flush() -> None:
    p = DscParser(dse_wait_ms=500)
    assert p.feed(DISTRESS + b"\r\n", now=0) == [] and p.waiting
    assert p.poll(100) == []
    (late,) = p.poll(600)
    assert isinstance(late, DscCall) and late.distress and "position_enhanced" not in late.data
    assert p.feed(DISTRESS + b"\r\n", now=1000) == []
    (flushed,) = p.flush()
    assert isinstance(flushed, DscCall) and flushed.distress


def test_split_at_every_byte_gives_the_same_call() -> None:
    whole = run([DISTRESS, DISTRESS_DSE])
    data = DISTRESS + b"\r\n" + DISTRESS_DSE + b"\r\n"
    p = DscParser()
    out: list[DscCall | Rejected] = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1], now=0)
    assert out + p.poll(10_000) == whole
