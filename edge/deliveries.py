"""What the platform asked to show on wearables (an `sos.ack`, an `alert.broadcast`),
delivered to every addressed wearable until it expires, whatever the links and restarts.

Each delivery is saved (`state_dir/deliveries.json`, written atomically) before it is
tried, then shown at once on the wearables connected, on the others when they connect,
and tried again every RETRY_S on one that is connected but whose write failed. Each
wearable's outcome is reported once, as `alert.delivery` with its `state`:
`delivered`, `unsupported` (its kind cannot show it) or `expired` (not shown before
`expires`); the worker it is bound to goes with it (edge/ingest.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.ble import profiles as p
from drivers.ble.kinds.base import Delivery as Outcome
from floor.fsutil import write_atomic

if TYPE_CHECKING:
    from drivers.ble.driver import BleManager

log = logging.getLogger(__name__)

MAX_DELIVERIES = 64  # kept at once; the oldest gives way (its devices are reported expired)
RETRY_S = 5.0
ACK_TTL_S = 3600.0  # an acknowledgement not shown within an hour is reported expired
ALERT_TTL_S = 6 * 3600.0  # an alert without `expires`


@dataclass
class Delivery:
    """One thing to show: an acknowledgement (`counter` set) or an alert (`level`, `text`)."""

    key: str  # "ack:<command id>" or "alert:<alert id>"
    report: dict[str, Any]  # the fields of its alert.delivery records (alert/level, ack/alarm_seq)
    expires_ms: int
    pending: list[str]  # wearables it has not reached yet
    counter: int | None = None
    pattern: int | None = None  # with a counter: the feedback shown (default *acknowledged*)
    level: int | None = None
    text: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: Any) -> Delivery | None:
        try:
            d = cls(**raw)
        except TypeError:
            return None
        ok = isinstance(d.key, str) and isinstance(d.pending, list) and isinstance(d.expires_ms, int)
        return d if ok and all(isinstance(x, str) for x in d.pending) else None


class Deliveries:
    """The saved deliveries and the one task that expires and retries them."""

    def __init__(
        self,
        path: Path,
        *,
        show: Callable[[str, Delivery], Awaitable[Outcome]],
        connected: Callable[[], set[str]],
        report: Callable[[dict[str, Any]], object],
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.path = path
        self._show = show
        self._connected = connected
        self._report = report
        self._now_ms = now_ms
        self._locks: dict[str, asyncio.Lock] = {}
        self.items: dict[str, Delivery] = self._read()
        self.reported = 0
        self._arrived: asyncio.Queue[str] = asyncio.Queue()  # wearables that just connected

    def _read(self) -> dict[str, Delivery]:
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("deliveries: %s unreadable (%s): starting without the saved deliveries", self.path, exc)
            return {}
        found = [Delivery.load(x) for x in raw] if isinstance(raw, list) else []
        return {d.key: d for d in found if d is not None}

    def _save(self) -> None:
        """Write the file; a failure is logged (what is in memory is still delivered)."""
        data = json.dumps([asdict(d) for d in self.items.values()], ensure_ascii=False).encode()
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            log.error("deliveries: cannot save %s: %s", self.path, exc.strerror)

    async def add(self, d: Delivery) -> dict[str, int]:
        """Save `d`, then show it where it can be shown now; what became of it so far."""
        old = self.items.pop(d.key, None)
        if old is not None:  # the same alert again: its devices not reached yet stay addressed
            d.pending = sorted(set(d.pending) | set(old.pending))
        self.items[d.key] = d
        while len(self.items) > MAX_DELIVERIES:
            self._expire(next(iter(self.items.values())))
        self._save()
        now = self._connected()
        await asyncio.gather(*(self._try(d, dev) for dev in list(d.pending) if dev in now))
        counts = {"wearables": len(d.pending) + len(d.outcomes)}
        for state in (Outcome.DELIVERED, Outcome.UNSUPPORTED):
            counts[state.value] = sum(1 for s in d.outcomes.values() if s == state)
        counts["pending"] = len(d.pending)
        return counts

    def connected(self, device: str) -> None:
        """A wearable connected: what waits for it goes now (from `run`'s task group)."""
        if any(device in d.pending for d in self.items.values()):
            self._arrived.put_nowait(device)

    async def _for_device(self, device: str, waiting: list[Delivery]) -> None:
        for d in waiting:
            await self._try(d, device)

    async def _try(self, d: Delivery, device: str) -> None:
        lock = self._locks.setdefault(device, asyncio.Lock())
        async with lock:
            if device not in d.pending or self.items.get(d.key) is not d:
                return  # shown meanwhile, or expired
            got: Outcome = await self._show(device, d)
            if got in (Outcome.DELIVERED, Outcome.UNSUPPORTED):
                self._outcome(d, device, got.value)
                if not d.pending:
                    del self.items[d.key]
                self._save()

    def _outcome(self, d: Delivery, device: str, state: str) -> None:
        d.pending.remove(device)
        d.outcomes[device] = state
        rec = {**d.report, "device": device, "state": state, "ok": state == Outcome.DELIVERED}
        if state != Outcome.DELIVERED:
            rec["error"] = state
        self.reported += 1
        self._report(rec)

    def _expire(self, d: Delivery) -> None:
        for device in list(d.pending):
            self._outcome(d, device, "expired")
        self.items.pop(d.key, None)

    async def run(self) -> None:
        """Show what waits to each wearable as it connects, each in a task of its own (a
        slow wearable holds up no other); expire and retry beside them."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._expire_and_retry(), name="deliveries.retry")
            while True:
                device = await self._arrived.get()
                waiting = [d for d in self.items.values() if device in d.pending]
                if waiting:
                    tg.create_task(self._for_device(device, waiting), name=f"deliveries.{device}")

    async def _expire_and_retry(self) -> None:
        """Expire what is past its time; retry what a connected wearable did not take."""
        next_retry = time.monotonic() + RETRY_S
        while True:
            await asyncio.sleep(1.0)
            now = self._now_ms()
            late = [d for d in self.items.values() if d.expires_ms <= now]
            for d in late:
                self._expire(d)
            if late:
                self._save()
            if time.monotonic() >= next_retry:
                next_retry = time.monotonic() + RETRY_S
                up = self._connected()
                for d in list(self.items.values()):
                    for dev in [x for x in d.pending if x in up]:
                        await self._try(d, dev)

    def snapshot(self) -> dict[str, Any]:
        return {
            "waiting": {d.key: sorted(d.pending) for d in self.items.values()},
            "reported": self.reported,
        }


def alert_level(value: object) -> p.AlertLevel | None:
    """How insistently to show an alert of level `value`: `info`, `warning` or
    `emergency`; absent, or a level of the platform's own (`recall`), is a warning.
    None when it is not text."""
    if value is None:
        return p.AlertLevel.WARNING
    if not isinstance(value, str) or len(value) > 32:
        return None
    return p.AlertLevel.named(value) or p.AlertLevel.WARNING


def through(ble: Callable[[], BleManager | None]) -> Callable[[str, Delivery], Awaitable[Outcome]]:
    """`Deliveries`' `show`, over the wearables' BLE manager (when it runs)."""

    async def show(device: str, d: Delivery) -> Outcome:
        manager = ble()
        if manager is None:
            return Outcome.NOT_CONNECTED
        if d.counter is not None:
            pattern = p.Feedback(d.pattern) if d.pattern is not None else p.Feedback.ACKNOWLEDGED
            return await manager.deliver(device, pattern, d.counter)
        return await manager.show_alert(device, p.AlertLevel(d.level or p.AlertLevel.WARNING), d.text)

    return show
