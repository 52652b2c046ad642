"""The second bearer at work: once the MQTT uplink has been down for `after_s`, every
life-safety message the broker has not acknowledged (it is still in the outbox) also
goes out by the bearer, once, in its compact signed form (edge/base/compact.py).

The MQTT copy still goes when the link is back; both name the same (gw, ep, seq), so
the platform keeps one. Which messages went is a cursor (the highest seq handled),
saved in `state_dir/sms.json`, so a restart does not send them again. Sends are
capped per hour (`max_parts_per_hour`, counted as `capped`): a flood of alarms, or a
hostile peer making them, cannot run up an SMS bill.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.base.config import SmsConfig
from edge.base.envelope import own_payload
from edge.base.fsutil import write_atomic
from edge.base.kinds import Prio
from edge.bearers import Bearer, BearerRefused
from edge.outbox import Outbox, Row

log = logging.getLogger(__name__)

TICK_S = 0.2
RETRY_S = 5.0  # after a refusal (no network...), the next try
HOUR_S = 3600.0


class SecondBearer:
    def __init__(
        self,
        bearer: Bearer,
        cfg: SmsConfig,
        *,
        outbox: Outbox,
        link_up: Callable[[], bool],
        sign_compact: Callable[[dict[str, Any]], bytes],
        state_file: Path,
    ) -> None:
        self.bearer = bearer
        self.cfg = cfg
        self._outbox = outbox
        self._link_up = link_up
        self._sign = sign_compact
        self._file = state_file
        self.after = self._load()  # the highest seq handled (sent, or not for this bearer)
        self.down_since: float | None = None
        self._spent: deque[tuple[float, int]] = deque()  # (monotonic, units) of the last hour
        self._retry_at = 0.0
        self.sent = 0
        self.units = 0
        self.capped = 0
        self.refused: Counter[str] = Counter()
        self.on_sent: Callable[[str, int, int], None] = lambda _kind, _seq, _units: None

    def _load(self) -> int:
        try:
            doc = json.loads(self._file.read_bytes())
            return int(doc["after"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "%s: %s unreadable (%s): alarms still in the outbox may go again",
                self.bearer.name,
                self._file,
                exc,
            )
            return 0

    def _save(self) -> None:
        try:
            write_atomic(self._file, json.dumps({"after": self.after}).encode())
        except OSError as exc:
            log.error("%s: cannot save %s: %s", self.bearer.name, self._file, exc.strerror)

    @property
    def active(self) -> bool:
        """The uplink has been down long enough for this bearer to carry life-safety."""
        return self.down_since is not None and time.monotonic() - self.down_since >= self.cfg.after_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if self._link_up():
                self.down_since = None
                continue
            if self.down_since is None:
                self.down_since = time.monotonic()
            if not self.active or time.monotonic() < self._retry_at:
                continue
            if self._outbox.depth(Prio.LIFE_SAFETY) == 0 or not self.bearer.ready():
                continue
            for row in await self._outbox.fetch(Prio.LIFE_SAFETY, self.after, 16):
                if not await self._carry(row):
                    break

    async def _carry(self, row: Row) -> bool:
        """Send one row (or pass it by); False to stop for now."""
        if row.kind not in self.cfg.kinds:
            self._advance(row.seq)
            return True
        payload = own_payload(row.body)
        data = self._sign(payload)
        cost = self.bearer.cost(data)
        now = time.monotonic()
        while self._spent and now - self._spent[0][0] >= HOUR_S:
            self._spent.popleft()
        if sum(u for _t, u in self._spent) + cost > self.cfg.max_parts_per_hour:
            self.capped += 1
            log.warning(
                "%s: hourly cap of %d parts reached; seq %d waits",
                self.bearer.name,
                self.cfg.max_parts_per_hour,
                row.seq,
            )
            self._retry_at = self._spent[0][0] + HOUR_S if self._spent else now + RETRY_S
            return False
        try:
            units = await self.bearer.send(data)
        except BearerRefused as exc:
            self.refused[exc.reason] += 1
            log.warning("%s: %s seq %d not sent: %s", self.bearer.name, row.kind, row.seq, exc)
            self._retry_at = time.monotonic() + RETRY_S
            return False
        self._spent.append((now, units))
        self.sent += 1
        self.units += units
        log.warning(
            "%s: %s seq %d sent (%d bytes, %d parts): the uplink is down",
            self.bearer.name,
            row.kind,
            row.seq,
            len(data),
            units,
        )
        self._advance(row.seq)
        self.on_sent(row.kind, row.seq, units)
        return True

    def _advance(self, seq: int) -> None:
        self.after = max(self.after, seq)
        self._save()

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.bearer.snapshot(),
            "active": self.active,
            "sent": self.sent,
            "parts": self.units,
            "capped": self.capped,
            "refused": dict(self.refused),
            "after_seq": self.after,
            "after_s": self.cfg.after_s,
        }
