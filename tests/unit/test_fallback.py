"""The fallback's rules with a bearer that only counts (the SMS bearer itself is tested
against a simulated modem): an alarm goes by a bearer when the broker has not
acknowledged it within failover_s, whatever the link says; a new alarm never waits, a
repeat only from its share of the budget and once per incident per repeat_every_s; what
was spent and sent survives a restart. Time is the test's own: an hour passes in seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.modem.part import SmsConfig
from drivers.part import BearerRefused
from edge.bearers.fallback import Fallback
from edge.ingest import Ingest
from edge.outbox import Outbox
from floor.config import AlarmsConfig
from tests.support.pieces import ingest_for


class CountingBearer:
    """Takes every message (or refuses, when told to) and counts what it took."""

    name = "sms"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (key, kind of what went)
        self.refuse = 0

    def ready(self) -> bool:
        return True

    def cost(self, data: bytes, text: str | None) -> int:
        return 2

    async def send(self, key: str, data: bytes, text: str | None) -> int:
        if self.refuse:
            self.refuse -= 1
            raise BearerRefused("cms_error", "+CMS ERROR: 21")
        self.sent.append((key, (text or "").split("]")[0]))
        return 2

    async def tell(self, key: str, text: str) -> int:
        return 0

    async def run(self) -> None:
        await asyncio.Event().wait()

    def snapshot(self) -> dict[str, Any]:
        return {"state": "ready"}


POLICY = AlarmsConfig(failover_s=5.0, reserve_share=0.5, repeat_every_s=600.0, language="en", map_link="")


def fallback(
    tmp: Path,
    outbox: Outbox,
    ingest: Ingest,
    bearer: CountingBearer,
    clock: list[float],
    *,
    per_hour: int = 6,
) -> Fallback:
    cfg = SmsConfig(port="/dev/null", numbers=("+8613800138000",), max_parts_per_hour=per_hour)
    return Fallback(
        [(bearer, cfg)],
        policy=POLICY,
        outbox=outbox,
        sign_compact=ingest.sign_compact,
        readable=lambda p: f"[{p['kind']}] x",
        state_dir=tmp,
        now=lambda: clock[0],
    )


async def commit(ingest: Ingest, kind: str, data: dict[str, Any]) -> int:
    seq = await ingest.emit(kind, "src", data)
    assert seq is not None
    return seq


def run(tmp_path: Path, body: Callable[[Outbox, Ingest], Any]) -> Any:
    async def go() -> Any:
        async with Outbox(tmp_path / "o.sqlite", synchronous="OFF") as ob:  # an hour of commits, fast
            writer = asyncio.get_running_loop().create_task(ob.run())
            try:
                return await body(ob, ingest_for(ob))
            finally:
                writer.cancel()

    return asyncio.run(go())


def test_an_unacknowledged_alarm_goes_after_failover_s_and_an_acknowledged_one_never(tmp_path: Path) -> None:
    async def body(ob: Outbox, ingest: Ingest) -> None:
        bearer = CountingBearer()
        clock = [0.0]
        fb = fallback(tmp_path, ob, ingest, bearer, clock)
        first = await commit(ingest, "sos.alarm", {"device": "b", "counter": 1})
        second = await commit(ingest, "sos.alarm", {"device": "b", "counter": 2})
        rows = await ob.fetch(0, 0, 10)
        at = rows[0].at / 1000
        fb.acked(first)  # the broker took the first in time
        clock[0] = at + 4.9
        await fb.tick()
        assert bearer.sent == []  # not yet: the broker may still acknowledge it
        clock[0] = at + 5.1
        await fb.tick()
        assert [k for k, _ in bearer.sent] == [f"1:{second}"]  # only the one never acknowledged
        await fb.tick()
        assert len(bearer.sent) == 1  # and once

    run(tmp_path, body)


def test_an_sos_after_an_hour_of_beacon_repeats_goes_at_once(tmp_path: Path) -> None:
    """A SART transmitting for an hour, its repeats at 1 Hz (each says `folded`), a budget
    of 6 parts an hour; then a worker's SOS: it goes on the first tick it is due."""

    async def body(ob: Outbox, ingest: Ingest) -> None:
        bearer = CountingBearer()
        clock = [0.0]
        fb = fallback(tmp_path, ob, ingest, bearer, clock)
        first = await commit(ingest, "ais.distress", {"mmsi": 970012345, "device": "sart"})
        t0 = (await ob.fetch(0, 0, 1))[0].at / 1000
        for second in range(1, 3600):
            await commit(ingest, "ais.distress", {"mmsi": 970012345, "device": "sart", "folded": 1})
            clock[0] = t0 + second + POLICY.failover_s
            await fb.tick()
        beacon = [k for k, what in bearer.sent if what == "[ais.distress"]
        # the new incident at once, then its repeats from the unreserved half only (3
        # parts an hour: one repeat of 2), and once per repeat_every_s at most
        assert beacon[0] == f"1:{first}" and 1 <= len(beacon) <= 1 + 1
        sos = await commit(ingest, "sos.alarm", {"device": "b", "counter": 9})
        clock[0] += POLICY.failover_s + 0.1
        await fb.tick()
        assert bearer.sent[-1] == (f"1:{sos}", "[sos.alarm")
        snap = fb.snapshot()["sms"]
        assert snap["capped"] + snap["passed_repeats"] >= 3000  # every other repeat passed by, counted

    run(tmp_path, body)


def test_a_new_alarm_never_waits_for_the_hour_to_turn(tmp_path: Path) -> None:
    async def body(ob: Outbox, ingest: Ingest) -> None:
        bearer = CountingBearer()
        clock = [0.0]
        fb = fallback(tmp_path, ob, ingest, bearer, clock, per_hour=2)
        seqs = [await commit(ingest, "sos.alarm", {"device": "b", "counter": n}) for n in range(4)]
        clock[0] = (await ob.fetch(0, 0, 1))[0].at / 1000 + 6
        await fb.tick()
        assert [k for k, _ in bearer.sent] == [f"1:{s}" for s in seqs]
        assert fb.snapshot()["sms"]["over_budget"] == 3  # counted, not held back

    run(tmp_path, body)


def test_a_refused_alarm_is_tried_again_and_what_was_spent_survives_a_restart(tmp_path: Path) -> None:
    async def body(ob: Outbox, ingest: Ingest) -> None:
        bearer = CountingBearer()
        bearer.refuse = 1
        clock = [0.0]
        fb = fallback(tmp_path, ob, ingest, bearer, clock)
        seq = await commit(ingest, "sos.alarm", {"device": "b", "counter": 1})
        clock[0] = (await ob.fetch(0, 0, 1))[0].at / 1000 + 6
        await fb.tick()
        assert bearer.sent == [] and fb.snapshot()["sms"]["refused"] == {"cms_error": 1}
        clock[0] += 6  # past the retry wait
        await fb.tick()
        assert [k for k, _ in bearer.sent] == [f"1:{seq}"]
        again = fallback(tmp_path, ob, ingest, CountingBearer(), clock)  # a restart
        assert again.after == seq and again.snapshot()["sms"]["spent_last_hour"] == 2
        await again.tick()
        assert again.carriers[0].sent == 0  # not sent twice

    run(tmp_path, body)


def test_a_bearer_with_test_every_s_tests_itself(tmp_path: Path) -> None:
    async def body(ob: Outbox, ingest: Ingest) -> None:
        bearer = CountingBearer()
        clock = [1000.0]
        cfg = SmsConfig(port="/dev/null", numbers=("+8613800138000",), test_every_s=60.0)
        fb = Fallback(
            [(bearer, cfg)],
            policy=POLICY,
            outbox=ob,
            sign_compact=ingest.sign_compact,
            readable=lambda p: "",
            state_dir=tmp_path,
            test_message=ingest.test_message,
            now=lambda: clock[0],
        )
        await fb.tick()
        clock[0] += 30
        await fb.tick()
        clock[0] += 31
        await fb.tick()
        assert [k for k, _ in bearer.sent] == ["test:1000", "test:1061"]
        assert fb.snapshot()["sms"]["tests_sent"] == 2

    run(tmp_path, body)


def test_a_repeat_gives_way_to_a_new_alarm_waiting_behind_it(tmp_path: Path) -> None:
    """A bearer's next message may be its only one for a while (a BeiDou card sends once
    a minute): a beacon's repeat due at the same moment as a worker's SOS is passed by,
    and the SOS goes."""

    async def body(ob: Outbox, ingest: Ingest) -> None:
        bearer = CountingBearer()
        clock = [0.0]
        fb = fallback(tmp_path, ob, ingest, bearer, clock, per_hour=100)
        first = await commit(ingest, "ais.distress", {"mmsi": 970012345, "device": "sart"})
        clock[0] = (await ob.fetch(0, 0, 1))[0].at / 1000 + POLICY.failover_s + 1
        await fb.tick()
        assert [k for k, _ in bearer.sent] == [f"1:{first}"]
        clock[0] += POLICY.repeat_every_s + 1  # the incident's repeat is allowed again...
        repeat = await commit(ingest, "ais.distress", {"mmsi": 970012345, "device": "sart", "folded": 3})
        sos = await commit(ingest, "sos.alarm", {"device": "b", "counter": 1})
        rows = await ob.fetch(0, first, 10)
        clock[0] = max(clock[0], rows[-1].at / 1000 + POLICY.failover_s + 1)
        await fb.tick()
        keys = [k for k, _ in bearer.sent]
        assert keys == [f"1:{first}", f"1:{sos}"]  # ...but the SOS behind it goes instead
        assert f"1:{repeat}" not in keys and fb.snapshot()["sms"]["passed_repeats"] == 1

    run(tmp_path, body)
