"""Real receiver captures through a pty, out as signed gnss.fix at a real broker."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.gateway import gnss_rig

DAY_MS = 86_400_000
CAPTURES = ["quectel-l76k-nmea.log", "beidou-bd.log", "ublox-neo-m9n-nmea.log", "unicore-um621.log"]


def gpsd_tpv(chk: Path) -> dict[int, list[dict[str, float]]]:
    """gpsd's TPV positions keyed by UTC time of day (ms)."""
    out: dict[int, list[dict[str, float]]] = {}
    for line in chk.read_text().splitlines():
        if line.startswith('{"class":"TPV"'):
            o = json.loads(line)
            if "lat" in o and "time" in o:
                t = dt.datetime.fromisoformat(o["time"].replace("Z", "+00:00"))
                tod = int(t.timestamp() * 1000) % DAY_MS
                out.setdefault(tod, []).append(o)
    return out


@pytest.mark.parametrize("capture", CAPTURES)
def test_capture_through_pty_matches_gpsd(
    capture: str, corpora: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    log = corpora / "gpsd" / "test" / "daemon" / capture
    expected = gpsd_tpv(log.with_name(capture + ".chk"))
    assert expected, "the reference has TPV records"
    with gnss_rig(broker.port, tmp_path) as (pty, _gw, col):
        pty.write_in_thread(log.read_bytes()).join(timeout=60)

        # Every reference epoch the receiver reported a position for must arrive.
        def fixes_in(msgs: list) -> list[dict]:  # type: ignore[type-arg]
            return [r["d"] for m in msgs if m.payload["kind"] == "gnss.fix" for r in m.payload["recs"]]

        def have_all(msgs: list) -> bool:  # type: ignore[type-arg]
            tods = {d["utc"] % DAY_MS for d in fixes_in(msgs) if "utc" in d}
            return set(expected) <= tods

        msgs = col.wait_for(have_all, timeout=60)
    assert not col.invalid
    fixes = fixes_in(msgs)
    by_tod: dict[int, dict] = {d["utc"] % DAY_MS: d for d in fixes if "utc" in d}  # type: ignore[type-arg]
    for tod, refs in expected.items():
        d = by_tod[tod]
        assert any(abs(d["lat"] - r["lat"]) < 1e-7 and abs(d["lon"] - r["lon"]) < 1e-7 for r in refs), (
            f"{capture}: fix at {tod} ms is {d['lat']},{d['lon']}; gpsd says {refs}"
        )
        if "alt" in d and any("altMSL" in r for r in refs):
            assert any(abs(d["alt"] - r["altMSL"]) < 1e-3 for r in refs if "altMSL" in r)
    # Every fix we published is at a time gpsd also reported or a plausible one (no invented fixes).
    assert all(-90 <= d["lat"] <= 90 and -180 <= d["lon"] <= 180 for d in fixes)
