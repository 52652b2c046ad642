"""One connected wearable (the `Link` its kind sees), its statistics, and why a session
ends; what a radio or a link may raise."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drivers.ble import uuids as u
from drivers.ble.kinds.base import Delivery, Host, ProfileMismatch, WearableKind
from floor.config import WearableConfig
from floor.kinds import DeviceState, Prio

if TYPE_CHECKING:  # bleak itself loads with the radio, when the first wearable is paired
    from bleak import BleakClient

log = logging.getLogger(__name__)

SESSION_QUEUE = 64  # notifications waiting per connected wearable


@functools.cache
def ble_errors() -> tuple[type[BaseException], ...]:
    """What a radio, a link or a misbehaving peripheral may raise (bleak's BleakError among
    them: imported here, on first use, so a station without wearables never loads bleak)."""
    from bleak.exc import BleakError

    return (BleakError, TimeoutError, OSError, EOFError, AttributeError, KeyError)


class End(enum.StrEnum):
    """Why a wearable's session ended (`device.state` `reason`)."""

    LOST = "lost"  # the link dropped
    SILENT = "silent"  # it stopped answering the liveness read
    ERROR = "error"
    PROFILE = "profile"  # not the gridedge profile of its kind: retried at the longest backoff
    SECURITY = "security"  # it sent an event its enrolled key does not verify: not believed,
    # dropped and retried at the longest backoff (whoever has its address lacks its key)


@dataclass
class WearableStats:
    state: DeviceState = DeviceState.UNSEEN
    connects: int = 0
    disconnects: int = 0
    silent: int = 0
    errors: int = 0
    events: int = 0
    repeats: int = 0
    rejected: int = 0
    alarms: int = 0
    last_error: str = ""
    rssi: int | None = None
    battery: int | None = None
    flooded: int = 0  # notifications dropped: more than SESSION_QUEUE waiting
    forged: int = 0  # events whose authentication failed (docs/ble-profiles.md)
    last_event: str = ""  # the kind of its latest counted event (sos.alarm, device.state...)
    last_event_ms: int = 0  # and when (unix ms)

    def snapshot(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Session:
    """One connected wearable: the `Link` its kind sees."""

    w: WearableConfig
    kind: WearableKind
    client: BleakClient
    lost: asyncio.Event
    timeout_s: float
    stats: WearableStats
    # bounded: a peripheral that notifies faster than its events can be handled loses
    # the surplus (counted); a real button resends an unanswered event anyway
    queue: asyncio.Queue[tuple[str, bytes]] = field(default_factory=lambda: asyncio.Queue(SESSION_QUEUE))
    untrusted: str | None = None  # why the session is to end for security

    async def read(self, char: str) -> bytes:
        async with asyncio.timeout(self.timeout_s):
            return bytes(await self.client.read_gatt_char(char))

    async def write(self, char: str, data: bytes) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self.client.write_gatt_char(char, data, response=True)

    def has(self, char: str) -> bool:
        return self.client.services.get_characteristic(char) is not None

    async def subscribe(self, char: str, tag: str) -> None:
        await self.client.start_notify(char, lambda _c, v: self._notified(tag, v))

    def _notified(self, tag: str, value: bytearray) -> None:
        try:
            self.queue.put_nowait((tag, bytes(value)))
        except asyncio.QueueFull:
            self.stats.flooded += 1

    def reject(self, detail: str) -> None:
        self.stats.rejected += 1
        log.warning("ble: %s: %s", self.w.id, detail)

    def forged(self, detail: str) -> None:
        self.stats.forged += 1
        self.untrusted = detail
        log.error("ble: %s: %s: not believed; dropping the connection", self.w.id, detail)

    async def prepare(self, host: Host) -> tuple[bytes, str | None] | str:
        """Check it is a gridedge wearable of its kind, read its battery and firmware, and
        subscribe; (battery, firmware), or why it is not of its kind."""
        kind = self.kind
        if self.client.services.get_service(kind.service) is None:
            return f"no {kind.label} service: not a gridedge {self.w.kind}"
        battery = await self.read(u.BATTERY_LEVEL)
        firmware = None
        with contextlib.suppress(*ble_errors(), UnicodeDecodeError):
            firmware = (await self.read(u.FIRMWARE_REVISION)).decode()[:32]
        await self.subscribe(u.BATTERY_LEVEL, "battery")
        try:
            await kind.start(self, host)
        except ProfileMismatch as exc:
            return f"not a gridedge {self.w.kind}: {exc}"
        return battery, firmware

    async def serve(self, probe_s: float, handle: Callable[[str, bytes], Awaitable[None]]) -> End:
        """Hand notifications to `handle` in order, read the battery every `probe_s` for
        liveness; returns why the session ended."""
        next_probe = time.monotonic() + probe_s
        lost = asyncio.get_running_loop().create_task(self.lost.wait())
        try:
            while not self.lost.is_set():
                timeout = max(0.0, next_probe - time.monotonic())
                getter = asyncio.get_running_loop().create_task(self.queue.get())
                done, _ = await asyncio.wait(
                    {getter, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    what, raw = getter.result()
                    await handle(what, raw)
                    if self.untrusted is not None:
                        return End.SECURITY
                    continue
                getter.cancel()
                if lost in done:
                    break
                try:
                    level = await self.read(u.BATTERY_LEVEL)
                except ble_errors():
                    self.stats.silent += 1
                    log.warning("ble: %s stopped answering; reconnecting", self.w.id)
                    return End.SILENT
                await handle("battery", level)
                next_probe = time.monotonic() + probe_s
            return End.LOST
        finally:
            lost.cancel()


ALARM_REACTION_S = 600.0  # a wearable that connects within this after its wearer's alarm still reacts


class Reactions:
    """A wearer's alarm asks their reacting wearables (a camera records): now when
    connected, else when they connect within ALARM_REACTION_S; each in the BLE manager's
    task group (`tg`, set while it runs)."""

    def __init__(self) -> None:
        self.tg: asyncio.TaskGroup | None = None
        self._wanted: dict[str, float] = {}  # wearable id -> deadline (monotonic) to react by

    def wanted(self, dev_id: str, sess: Session | None) -> None:
        if sess is None:
            self._wanted[dev_id] = time.monotonic() + ALARM_REACTION_S
        else:
            self._soon(sess)

    def connected(self, sess: Session) -> None:
        if self._wanted.pop(sess.w.id, 0.0) > time.monotonic():
            self._soon(sess)

    def _soon(self, sess: Session) -> None:
        if self.tg is not None:
            self.tg.create_task(self._react(sess), name=f"ble.{sess.w.id}.react")

    async def _react(self, sess: Session) -> None:
        try:
            await sess.kind.worker_alarm(sess)
        except ble_errors() as exc:
            log.warning("ble: %s: did not react to the alarm: %r", sess.w.id, exc)
            self._wanted[sess.w.id] = time.monotonic() + ALARM_REACTION_S


class BatteryReports:
    """When a wearable's battery level is worth a `device.battery`: on a change (as an
    event), and at least every `every_s` (as telemetry)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[int, float]] = {}

    def offer(self, dev_id: str, raw: bytes, stats: WearableStats) -> tuple[int, Prio | None] | None:
        """(percent, priority) to report, or None; a value out of range is counted."""
        if len(raw) != 1 or raw[0] > 100:
            stats.rejected += 1
            return None
        pct, now = raw[0], time.monotonic()
        last = self._last.get(dev_id)
        stats.battery = pct
        if last is not None and last[0] == pct and now - last[1] < self.every_s:
            return None
        self._last[dev_id] = (pct, now)
        return pct, Prio.EVENT if last is None or last[0] != pct else None


async def show_on(
    sess: Session | None, dev_id: str, write: Callable[[Session], Awaitable[bool | None]]
) -> Delivery:
    """What became of showing something on a wearable (written, not connected, refused)."""
    if sess is None:
        return Delivery.NOT_CONNECTED
    try:
        shown = await write(sess)
    except ble_errors() as exc:
        log.info("ble: %s: not written: %r", dev_id, exc)
        return Delivery.WRITE_FAILED
    return Delivery.UNSUPPORTED if shown is False else Delivery.DELIVERED
