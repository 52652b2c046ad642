"""Bounded outbox on real SQLite: thinning, reserve, TTL, drop reports, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Limits, Outbox, OutboxFull, OutboxHooks, Pending, drop_reports, ranges
from edge.outbox.model import HELD
from floor.kinds import Prio
from tests.support.smallfs import fill_disk

BODY = 400  # bytes per message, about a signed batch of a few fixes


def item(prio: Prio, kind: str, src: str = "gnss0", size: int = BODY) -> Pending:
    return Pending(prio, kind, src, 0, lambda seq: seq.to_bytes(8, "big") + b"x" * (size - 8))


async def fill(ob: Outbox, items: list[Pending]) -> list[int | BaseException]:
    futs = [ob.submit(i) for i in items]
    await ob.flush()
    return list(await asyncio.gather(*futs, return_exceptions=True))


def covered(reports: list[dict[str, Any]]) -> set[int]:
    return {s for r in reports for a, b in r["ranges"] for s in range(a, b + 1)}


def test_thinning_keeps_track_latest_and_every_alarm(tmp_path: Path) -> None:
    limits = Limits(max_bytes=4 * 1024 * 1024)
    reports: list[dict[str, Any]] = []

    async def go() -> tuple[set[int], set[int], Outbox]:
        async with Outbox(
            tmp_path / "o.sqlite", limits=limits, hooks=OutboxHooks(dropped=reports.append)
        ) as ob:
            alarms: set[int] = set()
            for i in range(40):  # far more than fits: ~4 budgets of telemetry
                batch = [item(Prio.TELEMETRY, "gnss.fix", f"gnss{i % 2}") for _ in range(250)]
                batch.append(item(Prio.LIFE_SAFETY, "sos.alarm", "sos1"))
                got = await fill(ob, batch)
                alarms.add(int(got[-1]))  # type: ignore[arg-type]
            assert ob.usage <= limits.budget
            left = {int(r[0]) for r in await ob.db.fetchall("SELECT seq FROM msgs")}
            return alarms, left, ob

    alarms, left, ob = asyncio.run(go())
    assert alarms <= left, "a life-safety message was dropped"
    dropped = covered(reports)
    assert dropped and not (dropped & left)
    assert dropped | left == set(range(1, ob.hw + 1)), "every seq is either kept or reported"
    # a decimated track (every 8th message) of the thinned stretch survives
    thinned_stretch = [s for s in left if s < max(dropped)]
    assert thinned_stretch and all(s % 8 == 0 or s in alarms for s in thinned_stretch)
    # the latest fix of each source survives
    assert {ob.hw - 1, ob.hw - 2} & left
    assert all(r["reason"] == "full" and r["kinds"].keys() <= {"gnss.fix"} for r in reports)


def test_events_go_after_telemetry_and_drop_reports_never(tmp_path: Path) -> None:
    limits = Limits(max_bytes=2 * 1024 * 1024)

    async def go() -> None:
        reports: list[dict[str, Any]] = []
        async with Outbox(
            tmp_path / "o.sqlite", limits=limits, hooks=OutboxHooks(dropped=reports.append)
        ) as ob:
            protected = await fill(ob, [item(Prio.EVENT, "outbox.dropped", "gw") for _ in range(200)])
            for _ in range(20):
                await fill(ob, [item(Prio.EVENT, "device.state") for _ in range(200)])
            kept = await ob.db.fetchall("SELECT seq FROM msgs WHERE kind = 'outbox.dropped'")
            assert len(kept) == len(protected)
            assert reports and all(r["kinds"].keys() <= {"device.state"} for r in reports)

    asyncio.run(go())


def test_full_lane_refuses_what_cannot_fit_but_never_an_alarm(tmp_path: Path) -> None:
    limits = Limits(max_bytes=2 * 1024 * 1024)

    async def go() -> None:
        async with Outbox(tmp_path / "o.sqlite", limits=limits) as ob:
            # Alarms alone, more than the budget: they are all kept (beyond the soft budget).
            got = await fill(ob, [item(Prio.LIFE_SAFETY, "sos.alarm", size=4000) for _ in range(600)])
            assert all(isinstance(g, int) for g in got)
            late = await fill(ob, [item(Prio.TELEMETRY, "gnss.fix")])
            assert isinstance(late[0], OutboxFull)
            assert ob.stats.refused == 1 and ob.depth(Prio.LIFE_SAFETY) == 600

    asyncio.run(go())


def test_ttl_expires_with_a_report(tmp_path: Path) -> None:
    limits = Limits(ttl_s={"gnss.fix": 60, "sos.alarm": 60})

    async def go() -> None:
        reports: list[dict[str, Any]] = []
        async with Outbox(
            tmp_path / "o.sqlite", limits=limits, hooks=OutboxHooks(dropped=reports.append)
        ) as ob:
            seqs = await fill(ob, [item(Prio.TELEMETRY, "gnss.fix") for _ in range(10)])
            await fill(ob, [item(Prio.LIFE_SAFETY, "sos.alarm")])
            now = int(__import__("time").time() * 1000)
            await ob.sweep(now)
            assert ob.depth() == 11
            await ob.sweep(now + 61_000)
            assert ob.depth() == 1  # the alarm never expires
            assert reports == [
                {
                    "reason": "ttl",
                    "count": 10,
                    "ranges": [[seqs[0], seqs[-1]]],
                    "kinds": {"gnss.fix": 10},
                    "total": 10,
                }
            ]

    asyncio.run(go())


def test_ranges_and_report_splitting() -> None:
    assert ranges([5, 1, 2, 3, 9]) == [[1, 3], [5, 5], [9, 9]]
    dropped = [(s, "gnss.fix") for s in range(0, 3000, 2)]
    reps = drop_reports(dropped, "full")
    assert len(reps) == 3 and sum(r["count"] for r in reps) == 1500
    assert covered(reps) == {s for s, _ in dropped}


def test_disk_full_keeps_accepting_alarms_from_the_reserve(small_disk: Path) -> None:
    limits = Limits(max_bytes=16 * 1024 * 1024)  # the budget is not the limit here: the disk is
    health: list[dict[str, Any]] = []

    async def go() -> None:
        async with Outbox(
            small_disk / "outbox.sqlite", limits=limits, hooks=OutboxHooks(health=health.append)
        ) as ob:
            assert (small_disk / "outbox.sqlite.reserve").exists()
            fill_disk(small_disk / "other-program.log")  # something else fills the disk
            tele = await fill(ob, [item(Prio.TELEMETRY, "gnss.fix", size=2000) for _ in range(50)])
            alarm = await fill(ob, [item(Prio.LIFE_SAFETY, "sos.alarm")])
            assert isinstance(alarm[0], int), alarm
            assert any(isinstance(t, OutboxFull) for t in tele) or ob.degraded
            assert ob.degraded and "disk full" in ob.degraded
            more = await fill(ob, [item(Prio.LIFE_SAFETY, "sos.alarm") for _ in range(20)])
            assert all(isinstance(m, int) for m in more)
            (small_disk / "other-program.log").unlink()  # space comes back
            await ob.sweep()
            assert ob.degraded is None
            assert isinstance((await fill(ob, [item(Prio.TELEMETRY, "gnss.fix")]))[0], int)

    asyncio.run(go())
    assert [h["state"] for h in health] == ["degraded", "ok"]


def test_telemetry_resumes_soon_after_the_disk_has_room_again(small_disk: Path) -> None:
    """While the disk is full the writer looks for room every few seconds (not only at its
    30 s sweep), so telemetry is refused for as short a time as possible."""
    limits = Limits(max_bytes=16 * 1024 * 1024)

    room = asyncio.Event()
    hooks = OutboxHooks(health=lambda h: room.set() if h["state"] == "ok" else None)

    async def go() -> float:
        async with Outbox(small_disk / "outbox.sqlite", limits=limits, hooks=hooks) as ob:
            writer = asyncio.create_task(ob.run())
            fill_disk(small_disk / "other-program.log")
            refused = await asyncio.gather(
                *(ob.submit(item(Prio.TELEMETRY, "gnss.fix", size=2000)) for _ in range(50)),
                return_exceptions=True,
            )
            assert any(isinstance(r, OutboxFull) for r in refused) and ob.degraded
            room.clear()  # from here on: the disk had room again
            (small_disk / "other-program.log").unlink()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), 10)  # SWEEP_S is 30 s
            waited = loop.time() - t0
            assert ob.degraded is None, "still refusing telemetry 10 s after the disk had room"
            assert isinstance(await ob.submit(item(Prio.TELEMETRY, "gnss.fix")), int)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            return waited

    print(f"telemetry accepted again {asyncio.run(go()):.1f} s after the disk had room")


def test_a_disk_that_keeps_filling_still_stores_every_alarm(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Something keeps filling the disk (it takes whatever is freed): the reserve is given
    up a step at a time, one step per alarm that needs it, not all at once to be eaten;
    when none is left, alarms are held in memory and stored as soon as there is room."""
    limits = Limits(max_bytes=16 * 1024 * 1024)
    reserve = small_disk / "outbox.sqlite.reserve"
    filler = small_disk / "runaway.log"

    async def go() -> tuple[list[int], list[int], list[int]]:
        async with Outbox(small_disk / "outbox.sqlite", limits=limits) as ob:
            sizes: list[int] = []
            stored: list[int] = []
            for _ in range(200):
                fill_disk(filler)
                alarm = ob.submit(item(Prio.LIFE_SAFETY, "sos.alarm"))
                await ob.flush()
                if not alarm.done():
                    break  # the reserve is used up: held
                stored.append(alarm.result())
                sizes.append(reserve.stat().st_size if reserve.exists() else 0)
            else:
                raise AssertionError("the reserve never ran out")
            assert ob.degraded == HELD
            tele = ob.submit(item(Prio.TELEMETRY, "gnss.fix"))
            later = ob.submit(item(Prio.LIFE_SAFETY, "sos.alarm"))
            await ob.flush()
            assert isinstance(tele.exception(), OutboxFull)  # refused, counted
            assert not later.done()  # held too, behind the first
            filler.unlink()  # room again
            await ob.sweep()
            await ob.flush()
            return stored, sizes, [await alarm, await later]

    stored, sizes, held = asyncio.run(go())
    steps = sorted(set(sizes), reverse=True)
    assert len(steps) >= 4, f"the reserve was not given up step by step: {sizes}"
    assert steps[-1] == 0
    seqs = stored + held
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # in order, no gap, none lost
    assert any("held in memory" in r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL)
