"""GNSS NMEA parser: golden captures, split invariance, fuzzing, rejections, time sanity."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.gnss.parse import Event, Fix, NmeaParser, NoFix
from drivers.gnss.report import FixReporter, distance_m
from drivers.gnss.sim import epoch_sentences, sentence
from drivers.nmea0183 import Reason, Rejected
from floor.clock import Clock


def run(data: bytes, chunks: list[int] | None = None) -> list[Event]:
    p = NmeaParser()
    out: list[Event] = []
    if chunks is None:
        out += p.feed(data, now=0)
    else:
        i = 0
        for n in chunks:
            out += p.feed(data[i : i + n], now=0)
            i += n
        out += p.feed(data[i:], now=0)
    return out + list(p.flush())


def reasons(events: list[Event]) -> list[Reason]:
    return [e.reason for e in events if isinstance(e, Rejected)]


SIM = b"".join(
    epoch_sentences(1_790_000_000 + i, 21.9 + i * 1e-4, 112.8 - i * 1e-4, talker=t)
    for i, t in enumerate(["GP", "GN", "BD", "GB", "GA", "GL", "GQ"])
)


def test_every_talker_gives_a_fix() -> None:
    fixes = [e for e in run(SIM) if isinstance(e, Fix)]
    assert len(fixes) == 7
    assert fixes[0].utc_ms == 1_790_000_000_000
    assert fixes[3].lat == pytest.approx(21.9003, abs=1e-7)
    assert fixes[3].lon == pytest.approx(112.7997, abs=1e-7)
    assert fixes[0].mode == 3 and fixes[0].alt == 12.0 and fixes[0].sats == 12
    assert fixes[0].speed == pytest.approx(1.4, abs=0.01)


def test_every_split_point_gives_the_same_events() -> None:
    whole = run(SIM)
    for cut in range(1, len(SIM)):
        assert run(SIM, [cut]) == whole, f"split at {cut}"


def test_one_byte_at_a_time() -> None:
    assert run(SIM, [1] * len(SIM)) == run(SIM)


def test_record_has_the_contract_fields() -> None:
    (fix, *_rest) = [e for e in run(SIM) if isinstance(e, Fix)]
    d = fix.record()
    assert set(d) == {"lat", "lon", "alt", "fix", "sats", "hdop", "speed", "course", "utc"}


def test_bad_checksum_and_missing_checksum_are_counted() -> None:
    good = sentence("GPRMC,120000.00,A,2155.116,N,11247.616,E,0.0,0.0,010126,,,A")
    bad = good.replace(b"*", b"*0").replace(b"*0", b"*", 1)[:-4] + b"00\r\n"
    events = run(bad + good.split(b"*")[0] + b"\r\n" + b"\x00\xff garbage\r\n")
    reasons = [e.reason for e in events if isinstance(e, Rejected)]
    assert reasons == [Reason.CHECKSUM, Reason.NO_CHECKSUM, Reason.GARBAGE]


def test_invalid_status_is_no_fix() -> None:
    events = run(
        sentence("GPRMC,120000.00,V,,,,,,,010126,,,N") + sentence("GPRMC,120001.00,V,,,,,,,010126,,,N")
    )
    assert all(isinstance(e, NoFix) for e in events) and events


@pytest.mark.parametrize(
    "body",
    [
        "GPRMC,120000.00,A,9155.116,N,11247.616,E,0.0,0.0,010126,,,A",  # latitude > 90
        "GPRMC,120000.00,A,2155.116,N,18147.616,E,0.0,0.0,010126,,,A",  # longitude > 180
        "GPRMC,120000.00,A,2175.116,N,11247.616,E,0.0,0.0,010126,,,A",  # 75 minutes
        "GPRMC,250000.00,A,2155.116,N,11247.616,E,0.0,0.0,010126,,,A",  # hour 25
        "GPRMC,120000.00,A,2155.116,N,11247.616,E,0.0,0.0,310226,,,A",  # 31 February
        "GPRMC,120000.00,A,2155.116,X,11247.616,E,0.0,0.0,010126,,,A",  # hemisphere X
        "GPGGA,120000.00,2155.116,N,11247.616,E,1,x,0.9,10.0,M,,M,,",  # sats not a number
        "GPRMC,120000.00,A,2155.116,N,11247.616,E,nan,0.0,010126,,,A",  # NaN speed
        "GPGSA,A,7,01,02,,,,,,,,,,,1.5,0.9,1.2",  # fix type 7
    ],
)
def test_out_of_range_values_are_rejected_not_published(body: str) -> None:
    events = run(sentence(body))
    assert [e.reason for e in events if isinstance(e, Rejected)] == [Reason.BAD_VALUE]
    assert not [e for e in events if isinstance(e, Fix)]


def test_overlong_line_is_rejected_and_memory_bounded() -> None:
    p = NmeaParser()
    out = p.feed(b"$" + b"A" * 100_000, now=0) + p.feed(b"\r\n" + SIM, now=0)
    assert [e.reason for e in out if isinstance(e, Rejected)] == [Reason.TOO_LONG]
    assert len([e for e in out + p.flush() if isinstance(e, Fix)]) == 7


def test_date_carried_over_midnight() -> None:
    data = sentence("GPRMC,235959.00,A,2155.116,N,11247.616,E,0.0,0.0,311226,,,A") + sentence(
        "GPGGA,000000.00,2155.116,N,11247.616,E,1,08,0.9,10.0,M,,M,,"
    )
    fixes = [e for e in run(data) if isinstance(e, Fix)]
    assert fixes[1].utc_ms == int(dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def test_gpsd_json_tpv_is_read() -> None:
    line = (
        b'{"class":"TPV","mode":3,"time":"2026-08-05T05:52:34.200Z",'
        b'"lat":47.66,"lon":-122.32,"altMSL":76.5}\n'
    )
    (fix,) = run(line)
    assert isinstance(fix, Fix) and fix.lat == 47.66 and fix.alt == 76.5 and fix.mode == 3
    assert fix.utc_ms == int(dt.datetime(2026, 8, 5, 5, 52, 34, 200_000, tzinfo=dt.UTC).timestamp() * 1000)
    assert reasons(run(b'{"class":"TPV","mode":3,"lat":"x","lon":1}\n')) == [Reason.BAD_VALUE]
    assert reasons(run(b"{not json\n")) == [Reason.MALFORMED]


def test_early_report_at_learned_cycle_end() -> None:
    # After three cycles closed by GSA, a GSA reports its epoch at once.
    p = NmeaParser()
    for i in range(4):
        p.feed(epoch_sentences(1_790_000_000 + i, 21.9, 112.8), now=i)
    out = p.feed(epoch_sentences(1_790_000_010, 21.9, 112.8), now=10)
    assert [e.utc_ms for e in out if isinstance(e, Fix)][-1] == 1_790_000_010_000


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), st.sampled_from([SIM[:300], b"\r\n", b"$GPGGA,", b"*"]))))
def test_fuzz_events_or_rejections_never_exceptions(chunks: list[bytes]) -> None:
    p = NmeaParser()
    for c in chunks:
        for e in p.feed(c, now=0):
            assert isinstance(e, Fix | NoFix | Rejected)
            if isinstance(e, Fix):
                assert -90 <= e.lat <= 90 and -180 <= e.lon <= 180


def test_random_bytes_are_survived_and_counted() -> None:
    rng = random.Random(7)
    noise = bytes(rng.randrange(256) for _ in range(200_000))
    p = NmeaParser()
    events = p.feed(noise, now=0) + p.feed(b"\r\n" + SIM, now=0) + p.flush()
    assert any(isinstance(e, Rejected) for e in events)
    assert len([e for e in events if isinstance(e, Fix)]) == 7


def test_fuzzy_cases_capture(corpora: Path) -> None:
    """gpsd's 'fuzzy arithmetic' cases: high-precision coordinates decode like gpsd's."""
    import json

    log = corpora / "gpsd/test/daemon/nmea-fuzzy-cases.log"
    fixes = [e for e in run(log.read_bytes()) if isinstance(e, Fix)]
    ref = [json.loads(x) for x in log.with_suffix(".log.chk").read_text().splitlines() if '"TPV"' in x]
    ref = [r for r in ref if "lat" in r]
    assert len(ref) > 10 and len(fixes) >= 10
    got = {(round(f.lat, 7), round(f.lon, 7)) for f in fixes}
    for r in ref:
        assert (round(r["lat"], 7), round(r["lon"], 7)) in got


def test_gps_week_rollover_never_sets_the_clock(corpora: Path) -> None:
    clock = Clock(synced=False, wall_ms=int(dt.datetime(2026, 11, 26, tzinfo=dt.UTC).timestamp() * 1000))
    before = clock.quality
    # Dates from a 2015 capture (a rolled-over receiver) and 2034 (a year ahead) are refused.
    old = int(dt.datetime(2015, 3, 18, tzinfo=dt.UTC).timestamp() * 1000)
    ahead = int(dt.datetime(2034, 11, 1, tzinfo=dt.UTC).timestamp() * 1000)
    assert not clock.observe_gnss(old, 0) and not clock.observe_gnss(ahead, 0)
    assert clock.quality == before
    good = int(dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.UTC).timestamp() * 1000)
    assert clock.observe_gnss(good, 1000)
    assert clock.quality == "gnss" and clock.stamp(2000).tu == good + 1000


def test_reporter_time_distance_and_heading() -> None:
    def fix(tb: int, lat: float, course: float = 0.0) -> Fix:
        return Fix(tb, None, None, lat, 112.8, None, 2, None, None, None, course)

    r = FixReporter(min_interval_s=10.0, min_distance_m=50.0, min_course_change_deg=30.0)
    assert r.offer(fix(0, 21.9))
    assert not r.offer(fix(1000, 21.9001))  # 11 m, 1 s
    assert r.offer(fix(2000, 21.9006))  # 67 m
    assert not r.offer(fix(3000, 21.9006, 20.0))
    assert r.offer(fix(4000, 21.9006, 45.0))  # turned 45 degrees
    assert r.offer(fix(14_000, 21.9006, 45.0))  # 10 s
    assert distance_m(0, 0, 0, 1) == pytest.approx(111_195, rel=1e-3)
    every = FixReporter(min_interval_s=0, min_distance_m=0, min_course_change_deg=0)
    assert all(every.offer(fix(t, 21.9)) for t in range(5))


def test_repeated_lines_are_remembered_within_a_bound_and_still_count() -> None:
    p = NmeaParser()
    gsa = sentence("GNGSA,A,2,01,02,03,,,,,,,,,,1.5,0.8,1.2,1")
    sky_changes = b"".join(sentence(f"GNGSA,A,3,{i:02d},02,03,,,,,,,,,,1.5,0.8,1.2,1") for i in range(100))
    p.feed(sky_changes, now=0)
    assert len(p._repeats) <= 16  # a sky that keeps changing does not grow memory
    p.flush()
    fixes = []
    for i in range(3):  # the same GSA bytes every epoch: its fix mode still applies each time
        t = 1_790_000_000.0 + i
        rmc_gga = epoch_sentences(t, 21.9, 112.8).split(b"\r\n")[:2]
        fixes += [e for e in p.feed(b"\r\n".join(rmc_gga) + b"\r\n" + gsa, now=i) if isinstance(e, Fix)]
    fixes += [e for e in p.flush() if isinstance(e, Fix)]
    assert [f.mode for f in fixes] == [2, 2, 2]
    bad = gsa[:-4] + b"00\r\n"  # the same sentence with a wrong checksum is not taken from memory
    assert [e.reason for e in p.feed(bad, now=9) if isinstance(e, Rejected)] == [Reason.CHECKSUM]
