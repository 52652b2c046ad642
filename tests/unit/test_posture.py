"""Emergency posture's rules with the test's own clock: a start in the future takes effect
then, the expiry ends it (published), a restart is still in it; and what it changes: a
home fleet's positions less shaped (and no one else's), a worker's positions more often."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drivers.ais.parse import AisReport
from drivers.ais.tracker import VesselTracker
from drivers.gnss.driver import GnssDriver
from drivers.gnss.part import GnssDevice
from edge.posture import Effects, Posture
from floor.clock import Clock
from floor.config import AisConfig, Geofence, PostureConfig, SerialPort

HOUR = 3_600_000


class Seen:
    def __init__(self) -> None:
        self.applied: list[PostureConfig | None] = []
        self.alerts: list[str] = []
        self.recalls = 0
        self.reports: list[dict[str, Any]] = []

    def effects(self) -> Effects:
        async def alert(text: str, _expires: int) -> Mapping[str, Any]:
            self.alerts.append(text)
            return {}

        def recall() -> None:
            self.recalls += 1

        return Effects(apply=self.applied.append, alert=alert, recall=recall, status=lambda: None)


def test_a_posture_starts_when_it_says_holds_through_a_restart_and_ends_at_expiry(tmp_path: Path) -> None:
    now = [10 * HOUR]
    seen = Seen()
    cfg = PostureConfig(recall_every_s=60)

    def make() -> Posture:
        return Posture(
            cfg,
            state_file=tmp_path / "p.json",
            effects=seen.effects(),
            report=seen.reports.append,
            now_ms=lambda: now[0],
        )

    async def go() -> None:
        p = make()
        args = {
            "posture": "emergency",
            "reason": "typhoon",
            "start": now[0] + 60_000,
            "expires": now[0] + HOUR,
        }
        await p.set(args, "c1")
        assert seen.applied == [] and p.current() == "everyday"  # not started yet
        now[0] += 60_000
        await p.tick()
        assert seen.applied == [cfg] and seen.alerts == ["typhoon"] and seen.recalls == 1
        now[0] += 61_000
        await p.tick()
        assert seen.recalls == 2  # every recall_every_s
        again = make()  # a restart
        await again.tick()
        assert again.current() == "emergency" and seen.applied[-1] == cfg
        now[0] += HOUR
        await again.tick()
        assert again.current() == "everyday" and seen.applied[-1] is None
        assert [(r["posture"], r["by"]) for r in seen.reports] == [
            ("everyday", "command"),
            ("everyday", "expiry"),
        ]
        assert seen.reports[0]["start_ms"] == 10 * HOUR + 60_000

    asyncio.run(go())


def _position(mmsi: int, tb: int) -> AisReport:
    data = {"lat": 21.9, "lon": 112.8, "speed": 3.0, "course": 90.0, "heading": 90, "status": 0}
    return AisReport(tb, 1, mmsi, "A", data, f"p{mmsi}{tb}")


def test_the_home_fleet_is_shaped_less_and_no_one_else() -> None:
    fence = Geofence(id="harbour", polygon=((21.0, 112.0), (21.0, 113.0), (22.0, 113.0)), fleet=(412000001,))
    tracker = VesselTracker(AisConfig(min_interval_s=30, dedup_window_s=0), (fence,))
    tracker.fleet_interval_s = 5.0
    went = {m: 0 for m in (412000001, 412999999)}
    for second in range(0, 61, 6):
        for mmsi in went:
            went[mmsi] += sum(
                k == "ais.position" for k, _d in tracker.offer(_position(mmsi, second * 1000), "a")
            )
    assert went[412000001] == 11 and went[412999999] == 3  # every 6 s against every 30 s


def test_a_workers_positions_go_up_more_often() -> None:
    dev = GnssDevice(id="g", source=SerialPort(port="x"), min_interval_s=30.0)
    driver = GnssDriver(dev, emit=lambda *a, **k: None, clock=Clock(synced=True))
    driver.pace(5.0)
    assert driver._reporter.min_interval_s == 5.0
    driver.pace(None)
    assert driver._reporter.min_interval_s == 30.0
