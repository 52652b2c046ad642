"""Other bearers at work: a life-safety message the broker has not acknowledged within a
bearer's `after_s` (by default `[alarms] failover_s`, a few seconds) also goes out by
that bearer, whatever the link's state says: a link that died silently (no FIN, no RST),
a broker that takes but never acknowledges, a broker never reached, a restart in the
middle of an outage all look the same from here: no PUBACK. It goes once, in its compact
signed form (floor/compact.py), with the readable form for a bearer's duty numbers.

The bearers are tried in the order of their config sections: a message goes by the
first one that is due, carries its kind, is ready and may spend on it; if that one
refuses it, by the next. The MQTT copy still goes; both name the same (gw, ep, seq), so
the platform keeps one.

Budgets rank: a new alarm (an SOS, a fall, no motion, a new distress incident) never
waits, and goes before anything else; a repeat of an incident already sent (a beacon
still transmitting: its record says `folded`) is sent at most once per `repeat_every_s`
for that incident, and only from the share of a bearer's hourly budget that new alarms
do not reserve (`[alarms] reserve_share`); a repeat that may not go is passed by (the
next repeat of that incident says how many it stands for). What was handled (a cursor),
what each bearer spent in the last hour and when each incident last went are saved in
`state_dir/bearers.json`, so a restart neither sends them again nor forgets the budget.

Each bearer's health (`bearer.state`: ready or not, why, signal, last success) is
published when it changes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.part import BearerHost
from drivers.parts import Bearer, BearerRefused, Parts
from edge.outbox import Outbox, Row
from floor.config import AlarmsConfig, BearerConfig, Config
from floor.envelope import own_payload
from floor.fsutil import write_atomic
from floor.kinds import Prio
from floor.supervisor import Backoff, supervise

log = logging.getLogger(__name__)

TICK_S = 0.2
RETRY_S = 5.0  # after a refusal (no network...), the next try of that bearer
HOUR_S = 3600.0
KEEP_ACKED = 4096  # life-safety seqs the broker acknowledged, remembered until their rows go
LEGACY_STATE = "sms.json"  # the cursor's file while SMS was the only bearer


@dataclass(slots=True)
class Carrier:
    """One bearer with its config and what it has spent."""

    bearer: Bearer
    cfg: BearerConfig
    after_s: float  # an alarm unacknowledged this long goes by this bearer
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (unix s, units), last hour
    retry_at: float = 0.0
    sent: int = 0
    units: int = 0
    capped: int = 0  # repeats held back by the share of the budget they may use
    over_budget: int = 0  # new alarms sent past the hourly budget (they never wait)
    refused: Counter[str] = field(default_factory=Counter)
    health: tuple[str, str] | None = None  # (state, cause) last published
    tested_at: float = 0.0  # when its last test message went (unix s)
    tests: int = 0

    def used(self, now: float) -> int:
        """Units spent in the hour before `now` (older ones forgotten)."""
        while self.spent and now - self.spent[0][0] >= HOUR_S:
            self.spent.popleft()
        return sum(u for _t, u in self.spent)


def incident(payload: Mapping[str, Any]) -> tuple[str, bool]:
    """(what the message is about, whether it repeats something already sent): a beacon's
    or a ship's distress is one incident across its reports; every press is its own."""
    recs = payload.get("recs") or [{}]
    d = recs[0].get("d", {}) if isinstance(recs[0], Mapping) else {}
    if not isinstance(d, Mapping):
        d = {}
    parts = (payload.get("kind"), payload.get("src"), d.get("mmsi", ""), d.get("device", ""))
    key = "/".join(str(x) for x in parts)
    return key, "folded" in d


class Fallback:
    def __init__(
        self,
        carriers: Sequence[tuple[Bearer, BearerConfig]],
        *,
        policy: AlarmsConfig,
        outbox: Outbox,
        sign_compact: Callable[[dict[str, Any]], bytes],
        readable: Callable[[Mapping[str, Any]], str],
        state_dir: Path,
        report: Callable[[str, dict[str, Any]], object] = lambda _kind, _rec: None,
        on_sent: Callable[[str, int, str, Mapping[str, Any]], None] = lambda _k, _s, _b, _p: None,
        test_message: Callable[[str], dict[str, Any]] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.carriers = [
            Carrier(b, c, policy.failover_s if c.after_s is None else c.after_s) for b, c in carriers
        ]
        self._outbox = outbox
        self._sign = sign_compact
        self._readable = readable
        self._file = state_dir / "bearers.json"
        self._report = report  # a record of the gateway's own (bearer.state)
        self._on_sent = on_sent  # (kind, seq, bearer name, payload)
        self._now = now
        self._test_message = test_message  # a bearer.test payload for the named bearer
        self._acked: OrderedDict[int, None] = OrderedDict()
        self.repeats: dict[str, float] = {}  # incident -> when a repeat of it last went (unix s)
        self.passed = 0  # repeats passed by (rate or budget)
        self.budget_factor = 1.0  # emergency posture raises every bearer's hourly budget
        self.after = self._load(state_dir)

    # state ------------------------------------------------------------------------

    def _load(self, state_dir: Path) -> int:
        """The cursor (the highest seq handled), and each bearer's spending, as saved."""
        after = 0
        for path in (state_dir / LEGACY_STATE, self._file):
            try:
                doc = json.loads(path.read_bytes())
                after = max(after, int(doc["after"]))
                spent = doc.get("spent", {})
                for c in self.carriers:
                    c.spent.extend((float(t), int(u)) for t, u in spent.get(c.bearer.name, []))
                self.repeats.update({str(k): float(v) for k, v in doc.get("repeats", {}).items()})
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("bearers: %s unreadable (%s): alarms still in the outbox may go again", path, exc)
        return after

    def _save(self) -> None:
        now = self._now()
        doc = {
            "after": self.after,
            "spent": {c.bearer.name: [[t, u] for t, u in c.spent if now - t < HOUR_S] for c in self.carriers},
            "repeats": {k: t for k, t in self.repeats.items() if now - t < self.policy.repeat_every_s},
        }
        try:
            write_atomic(self._file, json.dumps(doc).encode())
        except OSError as exc:
            log.error("bearers: cannot save %s: %s", self._file, exc.strerror)

    def acked(self, seq: int) -> None:
        """The broker acknowledged this life-safety message: no bearer needs to carry it."""
        self._acked[seq] = None
        while len(self._acked) > KEEP_ACKED:
            self._acked.popitem(last=False)

    # the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(TICK_S)

    async def tick(self) -> None:
        self._health()
        await self._test()
        if self._outbox.depth(Prio.LIFE_SAFETY) == 0:
            return
        soonest = min(c.after_s for c in self.carriers)
        now = self._now()
        rows = await self._outbox.fetch(Prio.LIFE_SAFETY, self.after, 64)
        for i, row in enumerate(rows):
            if row.seq in self._acked:
                self._advance(row.seq)
                continue
            age = now - row.at / 1000
            if age < soonest:
                break  # younger rows behind it are younger still
            behind = functools.partial(self._new_alarm, rows[i + 1 :], now - soonest)
            if not await self._carry(row, age, now, new_behind=behind):
                break

    def _new_alarm(self, rows: Sequence[Row], before: float) -> bool:
        """Whether one of `rows` is a new alarm (not a repeat) committed before `before`
        (due to go) and not acknowledged."""
        return any(
            r.at / 1000 <= before and r.seq not in self._acked and not incident(own_payload(r.body))[1]
            for r in rows
        )

    async def _carry(
        self, row: Row, age: float, now: float, *, new_behind: Callable[[], bool] = lambda: False
    ) -> bool:
        """Send one row by the first bearer that takes it (or pass it by); False to stop
        for now. A repeat is passed by while a new alarm waits behind it: a bearer's next
        message (a BeiDou card's one per interval) goes to the new alarm."""
        payload = own_payload(row.body)
        takers = [c for c in self.carriers if row.kind in c.cfg.kinds]
        key, repeat = incident(payload)
        early = repeat and now - self.repeats.get(key, -1e18) < self.policy.repeat_every_s
        if not takers or early or (repeat and new_behind()):
            self._pass(row, repeat)
            return True
        data = self._sign(payload)
        text = self._readable(payload)
        for c in takers:
            if age < c.after_s or now < c.retry_at or not c.bearer.ready():
                continue
            cost = c.bearer.cost(data, text)
            share = 1.0 - self.policy.reserve_share if repeat else 1.0
            budget = c.cfg.per_hour * self.budget_factor * share
            if c.used(now) + cost > budget:
                if repeat:
                    c.capped += 1
                    continue
                c.over_budget += 1  # a new alarm never waits for the hour to turn
            if await self._send(c, row, payload, data=data, text=text, now=now):
                if repeat:
                    self.repeats[key] = now
                self._advance(row.seq)
                return True
        if repeat:  # no bearer may carry it now: the incident's next report will
            self._pass(row, repeat)
            return True
        return False

    async def _send(
        self, c: Carrier, row: Row, payload: Mapping[str, Any], *, data: bytes, text: str, now: float
    ) -> bool:
        try:
            units = await c.bearer.send(f"{payload['ep'][0]}:{row.seq}", data, text)
        except BearerRefused as exc:
            c.refused[exc.reason] += 1
            log.warning("%s: %s seq %d not sent: %s", c.bearer.name, row.kind, row.seq, exc)
            c.retry_at = self._now() + RETRY_S
            return False
        c.spent.append((now, units))
        c.sent += 1
        c.units += units
        log.warning(
            "%s: %s seq %d sent (%d bytes, %d units): no acknowledgement from the broker",
            c.bearer.name,
            row.kind,
            row.seq,
            len(data),
            units,
        )
        self._on_sent(row.kind, row.seq, c.bearer.name, payload)
        return True

    def _pass(self, row: Row, repeat: bool) -> None:
        self.passed += repeat
        self._advance(row.seq)

    def _advance(self, seq: int) -> None:
        self.after = max(self.after, seq)
        self._acked.pop(seq, None)
        self._save()

    # health ------------------------------------------------------------------------

    async def _test(self) -> None:
        """Each bearer with `test_every_s` sends the platform a signed `bearer.test` that
        often: a SIM that stopped working is found before the day it is needed."""
        now = self._now()
        for c in self.carriers:
            every = c.cfg.test_every_s
            if not every or self._test_message is None or now - c.tested_at < every or not c.bearer.ready():
                continue
            c.tested_at = now
            payload = self._test_message(c.bearer.name)
            try:
                await c.bearer.send(f"test:{int(now)}", self._sign(payload), None)
            except BearerRefused as exc:
                c.refused[exc.reason] += 1
                log.warning("%s: the test message was refused: %s", c.bearer.name, exc)
                continue
            c.tests += 1

    def _health(self) -> None:
        """Publish a bearer's `bearer.state` when its state or the cause changed."""
        for c in self.carriers:
            snap = c.bearer.snapshot()
            now = (str(snap.get("state", "")), str(snap.get("cause") or ""))
            if now == c.health:
                continue
            c.health = now
            rec = {"bearer": c.bearer.name, "state": now[0], "cause": now[1] or None}
            for key in ("rssi_dbm", "registration", "last_success_ms", "errors"):
                if snap.get(key) is not None:
                    rec[key] = snap[key]
            self._report("bearer.state", rec)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each bearer's entry in the status, in the order they are tried."""
        return {
            c.bearer.name: {
                **c.bearer.snapshot(),
                "after_s": c.after_s,
                "sent": c.sent,
                "units": c.units,
                "spent_last_hour": c.used(self._now()),
                "per_hour": c.cfg.per_hour * self.budget_factor,
                "capped": c.capped,
                "over_budget": c.over_budget,
                "refused": dict(c.refused),
                "after_seq": self.after,
                "passed_repeats": self.passed,
                "tests_sent": c.tests,
            }
            for c in self.carriers
        }


def start_bearers(
    tg: asyncio.TaskGroup,
    cfg: Config,
    parts: Parts,
    *,
    host: BearerHost,
    outbox: Outbox,
    sign_compact: Callable[[dict[str, Any]], bytes],
    readable: Callable[[Mapping[str, Any]], str],
    report: Callable[[str, dict[str, Any]], object],
    on_sent: Callable[[str, int, str, Mapping[str, Any]], None],
    test_message: Callable[[str], dict[str, Any]] | None = None,
) -> Fallback | None:
    """Each enabled bearer of the config built from its part and run under a supervisor,
    and the fallback that tries them in the config's order; None without any."""
    carriers: list[tuple[Bearer, BearerConfig]] = []
    for bc in cfg.bearers:
        if not bc.enabled:
            continue
        part = parts.bearer(bc)
        bearer = part.build(bc, host)
        carriers.append((bearer, bc))
        first, longest = part.backoff
        tg.create_task(supervise(bearer.name, bearer.run, Backoff(first, longest)), name=f"{bearer.name}.run")
    if not carriers:
        return None
    fallback = Fallback(
        carriers,
        policy=cfg.alarms,
        outbox=outbox,
        sign_compact=sign_compact,
        readable=readable,
        state_dir=cfg.gateway.state_dir,
        report=report,
        on_sent=on_sent,
        test_message=test_message,
    )
    tg.create_task(fallback.run(), name="bearers.fallback")
    return fallback
