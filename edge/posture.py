"""Everyday and emergency posture (平战转换): before a typhoon makes landfall, the
platform switches a gateway, or a group of them by its group topic, into emergency
posture with a signed `posture.set`, and back; it returns to everyday by itself at the
expiry the command gave.

In emergency posture (`[posture]` says how much): workers' positions go up more often,
the home fleet's AIS positions too (shaping relaxed for the fleet only), the recall list
(`vessels.outside`) and the status (`diag.snapshot`) are published every N seconds,
every wearable is alerted, and the other bearers' hourly budgets are raised. Every
message made in it says so (`posture` in the envelope's payload). Each change is
published (`gateway.posture`), and the posture is kept in `state_dir/posture.json`, so
a restart is still in it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from floor.config import PostureConfig
from floor.fsutil import write_atomic

log = logging.getLogger(__name__)

EVERYDAY, EMERGENCY = "everyday", "emergency"
TICK_S = 1.0


class PostureRefused(ValueError):
    """A posture.set whose arguments do not describe a posture to take."""


@dataclass
class State:
    posture: str = EVERYDAY
    reason: str = ""
    start_ms: int = 0
    expires_ms: int = 0
    command: str = ""
    since_ms: int = 0  # when this state was taken


@dataclass(frozen=True, slots=True)
class Effects:
    """What the gateway changes with the posture (each given the posture's policy, or None
    for everyday)."""

    apply: Callable[[PostureConfig | None], None]  # positions, fleet shaping, budgets
    alert: Callable[[str, int], Awaitable[Mapping[str, Any]]]  # every wearable: the reason, until the expiry
    recall: Callable[[], None]  # vessels.outside, now
    status: Callable[[], None]  # diag.snapshot, now


class Posture:
    def __init__(
        self,
        cfg: PostureConfig,
        *,
        state_file: Path,
        effects: Effects,
        report: Callable[[dict[str, Any]], object],
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.cfg = cfg
        self._file = state_file
        self._effects = effects
        self._report = report
        self._now_ms = now_ms
        self.state = self._load()
        self._applied: bool | None = None
        self._last_recall = self._last_status = 0

    def _load(self) -> State:
        try:
            return State(**json.loads(self._file.read_bytes()))
        except FileNotFoundError:
            return State()
        except (OSError, ValueError, TypeError) as exc:
            log.error("posture: %s unreadable (%s): everyday posture", self._file, exc)
            return State()

    def _save(self) -> None:
        write_atomic(self._file, json.dumps(asdict(self.state)).encode())

    @property
    def emergency(self) -> bool:
        now, s = self._now_ms(), self.state
        return s.posture == EMERGENCY and s.start_ms <= now < s.expires_ms

    def current(self) -> str:
        """The posture a message made now is made in."""
        return EMERGENCY if self.emergency else EVERYDAY

    async def set(self, args: Mapping[str, Any], command: str) -> dict[str, Any]:
        """A verified posture.set: take it (saved first), publish it, apply it."""
        now = self._now_ms()
        posture, reason = args.get("posture"), args.get("reason", "")
        if posture not in (EVERYDAY, EMERGENCY) or not isinstance(reason, str) or len(reason) > 200:
            raise PostureRefused("posture must be everyday or emergency, reason text of 200 at most")
        start, expires = args.get("start", now), args.get("expires", 0)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, expires)):
            raise PostureRefused("start and expires must be unix ms")
        if posture == EMERGENCY and not now < expires <= now + int(self.cfg.max_hours * 3_600_000):
            raise PostureRefused(f"expires must be in the next {self.cfg.max_hours:g} hours")
        self.state = State(posture, reason, start, expires if posture == EMERGENCY else 0, command, now)
        await asyncio.to_thread(self._save)
        self._publish("command")
        await self._follow()
        return {"posture": self.current(), "expires": self.state.expires_ms}

    def _publish(self, by: str) -> None:
        s = self.state
        rec = {"posture": self.current(), "reason": s.reason, "since_ms": s.since_ms, "by": by}
        if s.posture == EMERGENCY:
            rec |= {"start_ms": s.start_ms, "expires_ms": s.expires_ms, "command": s.command}
        self._report(rec)

    async def _follow(self) -> None:
        """Apply the posture in effect now, once per change (a start in the future waits)."""
        emergency = self.emergency
        if emergency == self._applied or (self._applied is None and not emergency):
            self._applied = emergency  # everyday from the start: nothing to undo
            return
        self._applied = emergency
        log.warning("posture: %s (%s)", self.current(), self.state.reason or "no reason given")
        self._effects.apply(self.cfg if emergency else None)
        if emergency:
            self._effects.recall()
            self._effects.status()
            self._last_recall = self._last_status = self._now_ms()
            await self._effects.alert(self.state.reason or "emergency posture", self.state.expires_ms)

    async def run(self) -> None:
        await self._follow()  # after a restart: still in it
        while True:
            await asyncio.sleep(TICK_S)
            await self.tick()

    async def tick(self) -> None:
        now, s = self._now_ms(), self.state
        if s.posture == EMERGENCY and now >= s.expires_ms:
            self.state = State(EVERYDAY, s.reason, 0, 0, s.command, now)
            await asyncio.to_thread(self._save)
            self._publish("expiry")
        await self._follow()
        if not self.emergency:
            return
        if now - self._last_recall >= self.cfg.recall_every_s * 1000:
            self._last_recall = now
            self._effects.recall()
        if now - self._last_status >= self.cfg.status_every_s * 1000:
            self._last_status = now
            self._effects.status()

    def snapshot(self) -> dict[str, Any]:
        s = self.state
        return {
            "posture": self.current(),
            "reason": s.reason,
            "since_ms": s.since_ms,
            "expires_ms": s.expires_ms or None,
        }
