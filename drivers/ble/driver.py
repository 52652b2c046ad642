"""The wearables over BLE: one scanner, one connection task per paired device, the SOS path.

Everything goes through bleak's API (`BleakScanner`, `BleakClient`) on the backend
the config picks (drivers/ble/transport.py). Only wearables in the registry are
connected or believed; anything else advertising a gridedge service is counted and
reported as `device.unknown`, rate-limited, and never raises an alarm.

What each kind of wearable subscribes to and what its notifications become is its
module's business (drivers/ble/kinds); this manager is the same for all of them. The
counted-event path they share (`counted_event`): an event notification is checked
against the device's event counter (a repeat or replay is not a second alarm),
committed to the outbox (fsync) with that counter, and only then is the device told
"received" (feedback carrying the event's counter). An alarm is life-safety:
unbatched, never delayed, thinned or dropped, published ahead of any backlog; the
wearer's other wearables that react to it (a camera records) are told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from drivers.ble import profiles as p
from drivers.ble.counted import Alarm, Commit, CountedEvents
from drivers.ble.kinds import KINDS
from drivers.ble.kinds.base import Delivery, Link
from drivers.ble.session import BatteryReports, End, Reactions, Session, WearableStats, ble_errors, show_on
from drivers.ble.sightings import Sightings
from drivers.ble.transport import BleBackend, Factory
from floor.config import BleConfig, WearableConfig
from floor.errors import TransientError
from floor.kinds import DeviceState, Prio
from floor.supervisor import Backoff

if TYPE_CHECKING:  # bleak itself loads with the radio, when the first wearable is paired
    from bleak import BleakClient
    from bleak.backends.device import BLEDevice

log = logging.getLogger(__name__)


class Submit(Protocol):
    def __call__(
        self, kind: str, src: str, data: Mapping[str, Any], *, prio: Prio | None = None
    ) -> asyncio.Future[int] | None: ...


class BleManager:
    """The scanner and one connection task per paired wearable, in one task group; the
    kinds' `Host`. Who is advertising is drivers/ble/sightings.py, a connected wearable
    drivers/ble/session.py, the counted-event path drivers/ble/counted.py, and what each
    kind does drivers/ble/kinds/."""

    def __init__(
        self,
        cfg: BleConfig,
        *,
        wearables: Callable[[], Mapping[str, WearableConfig]],
        factory: Factory,
        submit: Submit,
        commit: Commit,
        last_fix: Callable[[], Mapping[str, Any] | None],
        read_state: Callable[[str], Awaitable[dict[str, bytes]]],
        on_connected: Callable[[str], None] = lambda _dev: None,
    ) -> None:
        self.cfg = cfg
        self._wearables = wearables
        self._factory = factory
        self._submit = submit
        self._last_fix = last_fix
        self.stats: dict[str, WearableStats] = {}
        self.counted = CountedEvents(commit=commit, read_state=read_state, stats=self.stats)
        self.sessions: dict[str, Session] = {}
        self.backend: BleBackend | None = None
        self._session_events: dict[str, asyncio.Event] = {}
        self._tg: asyncio.TaskGroup | None = None  # the sessions' and reactions' owner, while running
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._task_cfg: dict[str, WearableConfig] = {}  # what each task was started with
        self._changed = asyncio.Event()
        self.reactions = Reactions()  # a wearer's alarm, for the wearables that react to it
        self.batteries = BatteryReports(cfg.battery_report_s)
        # told each time a wearable is connected and subscribed (deliveries waiting for it)
        self.on_connected = on_connected  # what is owed to a wearable is shown when it connects
        self.kinds = {name: cls() for name, cls in KINDS.items()}
        self.sightings = Sightings(
            cfg, wearables, {k.service: k.label for k in self.kinds.values()}, self._submit
        )

    # -- registry ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """The registry changed (device.pair/unpair): connect the new, drop the removed."""
        self.sightings.forget_resolved()
        self._changed.set()

    # -- main loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs while any wearable is paired; raises TransientError when the radio is lost."""
        while not self._wearables():
            self._changed.clear()
            await self._changed.wait()
        await self.counted.restore()
        backend = await self._factory(dict(self.cfg.options))
        self.backend = backend
        scanner = backend.make_scanner(self.sightings.on_advert)
        radio_errors: tuple[type[BaseException], ...] = (ble_errors()[0], OSError, EOFError)
        try:
            try:
                await scanner.start()
            except radio_errors as exc:  # no adapter, no BlueZ, radio unplugged
                raise TransientError(f"BLE adapter unavailable ({backend.name}): {exc!r}") from None
            log.info("ble: scanning on %s", backend.name)
            async with asyncio.TaskGroup() as tg:
                self._tg = self.reactions.tg = tg
                await self._watch(backend)
        finally:
            self._tg = self.reactions.tg = None
            self._tasks.clear()
            with contextlib.suppress(Exception):
                await scanner.stop()
            await backend.aclose()
            self.backend = None

    async def _watch(self, backend: BleBackend) -> None:
        """Follow the registry and the kinds' clocks while the radio lives; raising ends the
        task group, and with it every session."""
        while backend.alive():
            self._reconcile()
            self._tick()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._changed.wait()
        raise TransientError(f"BLE radio {backend.name} lost")

    def _reconcile(self) -> None:
        if self._tg is None:
            return
        devices = self._wearables()
        for dev_id in [d for d in self._tasks if d not in devices]:
            self._tasks.pop(dev_id).cancel()
            self._emit_state(dev_id, DeviceState.UNPAIRED)
        for dev_id, w in devices.items():
            task = self._tasks.get(dev_id)
            if task is not None and self._task_cfg.get(dev_id) != w:
                task.cancel()  # re-paired (another worker, key or address): a session on the new terms
                task = None
            if task is None or task.done():
                self._task_cfg[dev_id] = w
                self.stats.setdefault(dev_id, WearableStats())
                self._tasks[dev_id] = self._tg.create_task(self._device_loop(w), name=f"ble.{dev_id}")

    # -- one wearable -------------------------------------------------------------------------

    async def _device_loop(self, w: WearableConfig) -> None:
        """Connect, serve, and again: not `supervise`, because a session's end is not an
        error (it returns why it ended: lost, silent, profile) and each try first waits
        for a fresh advert; it backs off with the same Backoff."""
        backoff = Backoff(0.2, self.cfg.reconnect_max_s)
        st = self.stats.setdefault(w.id, WearableStats())
        while True:
            device, rssi = await self.sightings.wait_seen(w.id)
            started = time.monotonic()
            reason = End.LOST
            try:
                reason = await self._session(w, device, rssi)
            except ble_errors() as exc:
                st.errors += 1
                st.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.info("ble: %s: %s", w.id, st.last_error)
                reason = End.ERROR
            except Exception as exc:  # a bug, an odd backend error: this wearable retries, nothing else stops
                st.errors += 1
                st.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.exception("ble: %s: unexpected error; reconnecting", w.id)
                reason = End.ERROR
            if time.monotonic() - started > 30.0:
                backoff.reset()
            delay = backoff.longest() if reason in (End.PROFILE, End.SECURITY) else backoff.next()
            self.sightings.forget_seen(w.id)  # wait for a fresh advert before trying again
            await asyncio.sleep(delay)

    async def _session(self, w: WearableConfig, device: BLEDevice, rssi: int) -> End:
        if self.backend is None:
            raise TransientError("BLE backend gone")
        st = self.stats[w.id]
        kind = self.kinds[w.kind]
        lost = asyncio.Event()
        client = self.backend.make_client(device, lambda _c: lost.set(), self.cfg.connect_timeout_s)
        async with asyncio.timeout(self.cfg.connect_timeout_s):
            await client.connect()
        sess = Session(w, kind, client, lost, self.cfg.probe_timeout_s, st)
        reason = End.LOST
        try:
            reason = await self._start(sess, rssi)
            if reason == End.LOST:
                reason = await sess.serve(self.cfg.probe_s, lambda what, raw: self._handle(sess, what, raw))
            return reason
        finally:
            self._ended(sess, reason)
            with contextlib.suppress(*ble_errors()):
                async with asyncio.timeout(self.cfg.probe_timeout_s):
                    await client.disconnect()

    async def _start(self, sess: Session, rssi: int) -> End:
        """Check the profile, read and subscribe, then report it connected: End.LOST when
        it is ready to serve, End.PROFILE when it is not a gridedge wearable of its kind."""
        w, st, kind = sess.w, sess.stats, sess.kind
        got = await sess.prepare(self)
        if isinstance(got, str):
            st.last_error = got
            self._emit_state(w.id, DeviceState.REJECTED, reason=End.PROFILE)
            return End.PROFILE
        battery, firmware = got
        # "connected" (in the status and on the wire) only once notifications are on: a
        # press the moment the status says connected must reach the gateway.
        st.connects += 1
        st.state = DeviceState.CONNECTED
        st.rssi = rssi
        self.sessions[w.id] = sess
        self._session_events.setdefault(w.id, asyncio.Event()).set()
        self._emit_state(w.id, DeviceState.CONNECTED, rssi=rssi, firmware=firmware)
        self._battery(w.id, battery[:1])
        kind.connected(sess, self, time.monotonic())
        self.on_connected(w.id)
        if kind.reacts_to_alarm:
            self.reactions.connected(sess)
        return End.LOST

    def _ended(self, sess: Session, reason: End) -> None:
        w, st = sess.w, sess.stats
        if self.sessions.get(w.id) is sess:
            del self.sessions[w.id]
            self._session_events.setdefault(w.id, asyncio.Event()).clear()
        if reason == End.SECURITY:
            st.disconnects += st.state == DeviceState.CONNECTED
            st.state = DeviceState.REJECTED
            st.last_error = sess.untrusted or ""
            self._emit_state(w.id, DeviceState.REJECTED, reason=End.SECURITY)
        elif st.state == DeviceState.CONNECTED:
            st.disconnects += 1
            st.state = DeviceState.DISCONNECTED
            self._emit_state(w.id, DeviceState.DISCONNECTED, reason=reason)

    async def _handle(self, sess: Session, what: str, raw: bytes) -> None:
        if what == "battery":
            self._battery(sess.w.id, raw[:1])
        else:
            await sess.kind.handle(sess, self, what, raw)

    def _tick(self) -> None:
        """The kinds' clocks (a lone worker's missed check-in), connected or not."""
        now = time.monotonic()
        devices = self._wearables()
        for name, kind in self.kinds.items():
            kind.tick(self, now, {d: w.worker for d, w in devices.items() if w.kind == name})

    def _battery(self, dev_id: str, raw: bytes) -> None:
        report = self.batteries.offer(dev_id, raw, self.stats[dev_id])
        if report is not None:
            self._submit("device.battery", dev_id, {"pct": report[0]}, prio=report[1])

    # -- the Host the kinds see --------------------------------------------------------------

    def submit(self, kind: str, src: str, data: Mapping[str, Any], *, prio: Prio | None = None) -> object:
        return self._submit(kind, src, data, prio=prio)

    def battery(self, link: Link, raw: bytes) -> None:
        self._battery(link.w.id, raw)

    def last_fix(self) -> Mapping[str, Any] | None:
        return self._last_fix()

    async def counted_event(
        self,
        link: Link,
        ev: p.SosEvent,
        *,
        kind: str,
        data: dict[str, Any],
        answer: p.Feedback,
        feedback: str,
    ) -> int | None:
        cancel = bool(data.get("cancel")) or answer == p.Feedback.CANCELLED
        alarm = kind in self.kinds[link.w.kind].alarms and not cancel
        return await self.counted.event(
            link, ev, kind=kind, data=data, answer=answer, feedback=feedback, alarm=alarm, cancel=cancel
        )

    def worker_alarm(self, worker: str) -> None:
        """An alarm asks the wearer's reacting wearables (cameras) to act, now or on connect."""
        for w in self._wearables().values():
            if w.worker == worker and self.kinds[w.kind].reacts_to_alarm:
                self.reactions.wanted(w.id, self.sessions.get(w.id))

    async def client_for(self, dev_id: str, timeout: float) -> BleakClient:
        """The live connection to a wearable, waiting up to `timeout` for one (firmware updates)."""
        ev = self._session_events.setdefault(dev_id, asyncio.Event())
        async with asyncio.timeout(timeout):
            while (sess := self.sessions.get(dev_id)) is None or not sess.client.is_connected:
                ev.clear()
                await ev.wait()
        return sess.client

    # -- commands: deliveries to wearables ------------------------------------------------------

    async def cancelled_since(self, device: str, alarm_seq: int) -> bool:
        return await self.counted.cancelled_since(device, alarm_seq)

    async def alarm(self, alarm_seq: int) -> Alarm | None:
        """The alarm committed as `alarm_seq` (this run's, or one kept on disk), or None."""
        return await self.counted.alarm(alarm_seq)

    async def deliver(self, dev_id: str, pattern: p.Feedback, counter: int = 0) -> Delivery:
        """Show a feedback pattern on a wearable (an acknowledgement)."""
        return await self._show(dev_id, lambda sess: sess.kind.alert(sess, pattern, counter))

    async def show_alert(self, dev_id: str, level: p.AlertLevel, text: str) -> Delivery:
        """Show a broadcast alert on a wearable, as well as its kind can."""
        return await self._show(dev_id, lambda sess: sess.kind.show_alert(sess, level, text))

    async def _show(self, dev_id: str, write: Callable[[Session], Awaitable[bool | None]]) -> Delivery:
        return await show_on(self.sessions.get(dev_id), dev_id, write)

    # -- reports --------------------------------------------------------------------------------

    def _emit_state(self, dev_id: str, state: DeviceState, **more: str | int | None) -> None:
        """`device.state`, with what is known of the change (reason, rssi, firmware)."""
        data: dict[str, Any] = {"state": state} | {k: v for k, v in more.items() if v is not None}
        self._submit("device.state", dev_id, data)

    def states(self) -> dict[str, str]:
        return {k: s.state for k, s in self.stats.items()}

    def snapshot(self) -> dict[str, Any]:
        return {
            "backend": None if self.backend is None else self.backend.name,
            "unknown_adverts": self.sightings.unknown_adverts,
            "unknown_reported": self.sightings.unknown_reported,
            "unknown_suppressed": self.sightings.unknown_suppressed,
            "wearables": {k: s.snapshot() for k, s in self.stats.items()},
        }
