"""Other bearers at work: once the MQTT uplink has been down for a bearer's `after_s`,
every life-safety message the broker has not acknowledged (it is still in the outbox)
also goes out by a bearer, once, in its compact signed form (floor/compact.py).

The bearers are tried in the order of their config sections: a message goes by the
first one that is active, carries its kind, is ready and has budget left; if that one
refuses it, by the next. The MQTT copy still goes when the link is back; both name the
same (gw, ep, seq), so the platform keeps one. Which messages went is a cursor (the
highest seq handled), saved in `state_dir/bearers.json`, so a restart does not send them
again. Each bearer spends at most its hourly budget (`per_hour`, counted as `capped`):
a flood of alarms, or a hostile peer making them, cannot run up a bill.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.parts import Bearer, BearerRefused, Parts
from edge.outbox import Outbox, Row
from floor.config import BearerConfig, Config
from floor.envelope import own_payload
from floor.fsutil import write_atomic
from floor.kinds import Prio
from floor.supervisor import Backoff, supervise

log = logging.getLogger(__name__)

TICK_S = 0.2
RETRY_S = 5.0  # after a refusal (no network...), the next try of that bearer
HOUR_S = 3600.0
LEGACY_STATE = "sms.json"  # the cursor's file while SMS was the only bearer


@dataclass(slots=True)
class Carrier:
    """One bearer with its config and what it has spent."""

    bearer: Bearer
    cfg: BearerConfig
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic, units), last hour
    retry_at: float = 0.0
    sent: int = 0
    units: int = 0
    capped: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def room(self, cost: int, now: float) -> bool:
        """Whether `cost` fits the budget of the last hour (the spent older than that forgotten)."""
        while self.spent and now - self.spent[0][0] >= HOUR_S:
            self.spent.popleft()
        return sum(u for _t, u in self.spent) + cost <= self.cfg.per_hour


class Fallback:
    def __init__(
        self,
        carriers: Sequence[tuple[Bearer, BearerConfig]],
        *,
        outbox: Outbox,
        link_up: Callable[[], bool],
        sign_compact: Callable[[dict[str, Any]], bytes],
        state_dir: Path,
        on_sent: Callable[[str, int, str], None] = lambda _kind, _seq, _bearer: None,
    ) -> None:
        self.carriers = [Carrier(b, c) for b, c in carriers]
        self._outbox = outbox
        self._link_up = link_up
        self._sign = sign_compact
        self._file = state_dir / "bearers.json"
        self._on_sent = on_sent  # (kind, seq, bearer name)
        self.after = max(self._load(self._file), self._load(state_dir / LEGACY_STATE))
        self.down_since: float | None = None

    def _load(self, path: Path) -> int:
        """The highest seq handled (sent, or not for any bearer), as saved."""
        try:
            return int(json.loads(path.read_bytes())["after"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("bearers: %s unreadable (%s): alarms still in the outbox may go again", path, exc)
            return 0

    def _save(self) -> None:
        try:
            write_atomic(self._file, json.dumps({"after": self.after}).encode())
        except OSError as exc:
            log.error("bearers: cannot save %s: %s", self._file, exc.strerror)

    def active(self, c: Carrier) -> bool:
        """The uplink has been down long enough for this bearer to carry life-safety."""
        return self.down_since is not None and time.monotonic() - self.down_since >= c.cfg.after_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if self._link_up():
                self.down_since = None
                continue
            if self.down_since is None:
                self.down_since = time.monotonic()
            now = time.monotonic()
            if not any(self.active(c) and now >= c.retry_at and c.bearer.ready() for c in self.carriers):
                continue
            if self._outbox.depth(Prio.LIFE_SAFETY) == 0:
                continue
            for row in await self._outbox.fetch(Prio.LIFE_SAFETY, self.after, 16):
                if not await self._carry(row):
                    break

    async def _carry(self, row: Row) -> bool:
        """Send one row by the first bearer that takes it (or pass it by); False to stop for now."""
        takers = [c for c in self.carriers if row.kind in c.cfg.kinds]
        if not takers:
            self._advance(row.seq)
            return True
        data = self._sign(own_payload(row.body))
        for c in takers:
            now = time.monotonic()
            if not self.active(c) or now < c.retry_at or not c.bearer.ready():
                continue
            if not c.room(c.bearer.cost(data), now):
                c.capped += 1
                log.warning(
                    "%s: hourly budget of %d reached; seq %d waits", c.bearer.name, c.cfg.per_hour, row.seq
                )
                c.retry_at = c.spent[0][0] + HOUR_S if c.spent else now + RETRY_S
                continue
            if await self._send(c, row, data, now):
                return True
        return False

    async def _send(self, c: Carrier, row: Row, data: bytes, now: float) -> bool:
        try:
            units = await c.bearer.send(data)
        except BearerRefused as exc:
            c.refused[exc.reason] += 1
            log.warning("%s: %s seq %d not sent: %s", c.bearer.name, row.kind, row.seq, exc)
            c.retry_at = time.monotonic() + RETRY_S
            return False
        c.spent.append((now, units))
        c.sent += 1
        c.units += units
        log.warning(
            "%s: %s seq %d sent (%d bytes, %d units): the uplink is down",
            c.bearer.name,
            row.kind,
            row.seq,
            len(data),
            units,
        )
        self._advance(row.seq)
        self._on_sent(row.kind, row.seq, c.bearer.name)
        return True

    def _advance(self, seq: int) -> None:
        self.after = max(self.after, seq)
        self._save()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each bearer's entry in the status, in the order they are tried."""
        return {
            c.bearer.name: {
                **c.bearer.snapshot(),
                "active": self.active(c),
                "sent": c.sent,
                "units": c.units,
                "capped": c.capped,
                "refused": dict(c.refused),
                "after_seq": self.after,
                "after_s": c.cfg.after_s,
            }
            for c in self.carriers
        }


def start_bearers(
    tg: asyncio.TaskGroup,
    cfg: Config,
    parts: Parts,
    *,
    outbox: Outbox,
    link_up: Callable[[], bool],
    sign_compact: Callable[[dict[str, Any]], bytes],
    on_sent: Callable[[str, int, str], None],
) -> Fallback | None:
    """Each enabled bearer of the config built from its part and run under a supervisor,
    and the fallback that tries them in the config's order; None without any."""
    carriers: list[tuple[Bearer, BearerConfig]] = []
    for bc in cfg.bearers:
        if not bc.enabled:
            continue
        part = parts.bearer(bc)
        bearer = part.build(bc)
        carriers.append((bearer, bc))
        first, longest = part.backoff
        tg.create_task(supervise(bearer.name, bearer.run, Backoff(first, longest)), name=f"{bearer.name}.run")
    if not carriers:
        return None
    fallback = Fallback(
        carriers,
        outbox=outbox,
        link_up=link_up,
        sign_compact=sign_compact,
        state_dir=cfg.gateway.state_dir,
        on_sent=on_sent,
    )
    tg.create_task(fallback.run(), name="bearers.fallback")
    return fallback
