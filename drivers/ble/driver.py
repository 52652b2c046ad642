"""The wearables over BLE: one scanner, one connection task per paired device, the SOS path.

Everything goes through bleak's API (`BleakScanner`, `BleakClient`) on the backend
the config picks (drivers/ble/transport.py). Only wearables in the registry are
connected or believed; anything else advertising a gridedge service is counted and
reported as `device.unknown`, rate-limited, and never raises an alarm.

The SOS path: an event notification is decoded, checked against the device's event
counter (a repeat or replay is not a second alarm), committed to the outbox (fsync)
as `sos.alarm`/`sos.cancel`, and only then is the button told "received" (feedback
carrying the event's counter). The alarm is life-safety: unbatched, never delayed,
thinned or dropped, published ahead of any backlog. The wearer's camera is asked to
start recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bleak import BleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.rpa import resolves
from drivers.ble.transport import BleBackend, Factory
from drivers.nmea0183 import Rejected
from edge.config import BleConfig, WearableConfig
from edge.errors import TransientError
from edge.kinds import Prio
from edge.supervisor import Backoff

log = logging.getLogger(__name__)

SEEN_FRESH_S = 30.0  # an advert older than this does not count as "in range"
STALE_RETRY_S = 15.0  # with no fresh advert for this long, try the last known device anyway
CAMERA_SOS_WINDOW_S = 600.0  # a camera that connects within this after its wearer's SOS starts recording
MAX_STRANGERS = 1024  # strangers remembered for rate limiting (oldest forgotten first)
GRIDEDGE_SERVICES = (u.SOS_SERVICE, u.CAMERA_SERVICE)
EVENT_KINDS = {
    p.SosEventType.LONG_PRESS: ("sos.alarm", p.Feedback.RECEIVED),
    p.SosEventType.TRIPLE_PRESS: ("sos.cancel", p.Feedback.CANCELLED),
    p.SosEventType.PRESS: ("device.state", p.Feedback.RECEIVED),
    p.SosEventType.TEST: ("device.state", p.Feedback.RECEIVED),
}
BLE_ERRORS = (BleakError, TimeoutError, OSError, EOFError, AttributeError, KeyError)


class Submit(Protocol):
    def __call__(
        self, kind: str, src: str, data: Mapping[str, Any], *, prio: Prio | None = None
    ) -> asyncio.Future[int] | None: ...


class Commit(Protocol):
    def __call__(
        self, kind: str, src: str, data: Mapping[str, Any], *, state: tuple[str, bytes] | None = None
    ) -> Awaitable[int | None]: ...


GUARD_KEY = "ble.sos/"  # outbox state records: the last SOS event committed per button
_GUARD = struct.Struct("<HI")  # counter, uptime_ms


@dataclass
class WearableStats:
    state: str = "unseen"
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

    def snapshot(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Session:
    w: WearableConfig
    client: BleakClient
    lost: asyncio.Event
    queue: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    camera: p.CameraStatus | None = None


class BleManager:
    """Scanner, per-wearable connections and the SOS path."""

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
    ) -> None:
        self.cfg = cfg
        self._wearables = wearables
        self._factory = factory
        self._submit = submit
        self._commit = commit
        self._last_fix = last_fix
        self._read_state = read_state
        self.guard: p.SosCounterGuard | None = None  # restored from the outbox at the first run
        self.stats: dict[str, WearableStats] = {}
        self.sessions: dict[str, _Session] = {}
        self.backend: BleBackend | None = None
        self.unknown_adverts = 0
        self.unknown_reported = 0
        self._strangers: OrderedDict[str, tuple[float, int]] = (
            OrderedDict()
        )  # address -> (last report, count)
        self._seen: dict[str, tuple[BLEDevice, int, float]] = {}  # wearable id -> (device, rssi, when)
        self._known: dict[str, tuple[BLEDevice, int]] = {}  # the last advert ever seen, kept
        self._seen_events: dict[str, asyncio.Event] = {}
        self._session_events: dict[str, asyncio.Event] = {}
        self._rpa_cache: dict[str, str] = {}  # advertised address -> wearable id resolved by IRK, or ""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._alarms: OrderedDict[int, tuple[str, int]] = OrderedDict()  # alarm seq -> (device, counter)
        self._camera_wanted: dict[str, float] = {}  # camera id -> deadline (monotonic)
        self._last_battery: dict[str, tuple[int, float]] = {}

    # -- registry ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """The registry changed (device.pair/unpair): connect the new, drop the removed."""
        self._rpa_cache.clear()
        self._changed.set()

    def _identify(self, address: str) -> WearableConfig | None:
        address = address.upper()
        devices = self._wearables()
        for w in devices.values():
            if w.address is not None and w.address == address:
                return w
        if address not in self._rpa_cache:
            # One AES per IRK per new address, not per advert: the answer (a wearable id,
            # or "" for a stranger) is kept until the registry changes.
            if len(self._rpa_cache) > 4096:
                self._rpa_cache.clear()
            self._rpa_cache[address] = next(
                (
                    w.id
                    for w in devices.values()
                    if w.irk is not None and resolves(bytes.fromhex(w.irk), address)
                ),
                "",
            )
        return devices.get(self._rpa_cache[address])

    # -- main loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs while any wearable is paired; raises TransientError when the radio is lost."""
        while not self._wearables():
            self._changed.clear()
            await self._changed.wait()
        if self.guard is None:
            stored = await self._read_state(GUARD_KEY)
            self.guard = p.SosCounterGuard(
                {k[len(GUARD_KEY) :]: _GUARD.unpack(v) for k, v in stored.items() if len(v) == _GUARD.size}
            )
        backend = await self._factory(dict(self.cfg.options))
        self.backend = backend
        scanner = backend.make_scanner(self._on_advert)
        try:
            try:
                await scanner.start()
            except (BleakError, OSError, EOFError) as exc:  # no adapter, no BlueZ, radio unplugged
                raise TransientError(f"BLE adapter unavailable ({backend.name}): {exc!r}") from None
            log.info("ble: scanning on %s", backend.name)
            while backend.alive():
                self._reconcile()
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._changed.wait()
            raise TransientError(f"BLE radio {backend.name} lost")
        finally:
            for task in self._tasks.values():
                task.cancel()
            for task in self._tasks.values():
                with contextlib.suppress(BaseException):
                    await task
            self._tasks.clear()
            with contextlib.suppress(Exception):
                await scanner.stop()
            await backend.aclose()
            self.backend = None

    def _reconcile(self) -> None:
        devices = self._wearables()
        for dev_id in [d for d in self._tasks if d not in devices]:
            self._tasks.pop(dev_id).cancel()
            self._emit_state(dev_id, "unpaired")
        for dev_id, w in devices.items():
            task = self._tasks.get(dev_id)
            if task is None or task.done():
                self.stats.setdefault(dev_id, WearableStats())
                self._tasks[dev_id] = asyncio.get_running_loop().create_task(
                    self._device_loop(w), name=f"ble.{dev_id}"
                )

    # -- scanning -----------------------------------------------------------------------------

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        w = self._identify(device.address)
        now = time.monotonic()
        if w is not None:
            self._seen[w.id] = (device, adv.rssi, now)
            self._known[w.id] = (device, adv.rssi)
            ev = self._seen_events.get(w.id)
            if ev is not None:
                ev.set()
            return
        self.unknown_adverts += 1
        ours = [s for s in adv.service_uuids if s in GRIDEDGE_SERVICES]
        if not ours:
            return  # a phone or a beacon: counted, not reported
        address = device.address.upper()
        last, count = self._strangers.pop(address, (float("-inf"), 0))
        count += 1
        if now - last >= self.cfg.unknown_report_s:
            self.unknown_reported += 1
            self._submit(
                "device.unknown",
                "gw",
                {
                    "address": address,
                    "rssi": adv.rssi,
                    "services": [_service_name(s) for s in ours],
                    "name": adv.local_name,
                    "adverts": count,
                },
            )
            last, count = now, 0
        self._strangers[address] = (last, count)
        while len(self._strangers) > MAX_STRANGERS:
            self._strangers.popitem(last=False)

    async def _wait_seen(self, dev_id: str) -> tuple[BLEDevice, int]:
        """A device to connect to: one advertising now, or after STALE_RETRY_S without a
        fresh advert the last one seen (BlueZ may not report again a device it knows,
        yet connects to it; a device really gone then fails and backs off)."""
        waited = 0.0
        while True:
            seen = self._seen.get(dev_id)
            if seen is not None and time.monotonic() - seen[2] < SEEN_FRESH_S:
                return seen[0], seen[1]
            known = self._known.get(dev_id)
            if known is not None and waited >= STALE_RETRY_S:
                return known[0], known[1]
            ev = self._seen_events.setdefault(dev_id, asyncio.Event())
            ev.clear()
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STALE_RETRY_S):
                    await ev.wait()
            waited += time.monotonic() - started

    # -- one wearable -------------------------------------------------------------------------

    async def _device_loop(self, w: WearableConfig) -> None:
        backoff = Backoff(0.2, self.cfg.reconnect_max_s)
        st = self.stats.setdefault(w.id, WearableStats())
        while True:
            device, rssi = await self._wait_seen(w.id)
            started = time.monotonic()
            reason = "lost"
            try:
                reason = await self._session(w, device, rssi)
            except BLE_ERRORS as exc:
                st.errors += 1
                st.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.info("ble: %s: %s", w.id, st.last_error)
                reason = "error"
            except Exception as exc:  # a bug, an odd backend error: this wearable retries, nothing else stops
                st.errors += 1
                st.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.exception("ble: %s: unexpected error; reconnecting", w.id)
                reason = "error"
            if time.monotonic() - started > 30.0:
                backoff.reset()
            delay = backoff.longest() if reason == "profile" else backoff.next()
            self._seen.pop(w.id, None)  # wait for a fresh advert before trying again
            await asyncio.sleep(delay)

    async def _session(self, w: WearableConfig, device: BLEDevice, rssi: int) -> str:
        assert self.backend is not None
        st = self.stats[w.id]
        lost = asyncio.Event()
        client = self.backend.make_client(device, lambda _c: lost.set(), self.cfg.connect_timeout_s)
        async with asyncio.timeout(self.cfg.connect_timeout_s):
            await client.connect()
        sess = _Session(w, client, lost)
        reason = "lost"
        try:
            required = u.SOS_SERVICE if w.kind == "sos_button" else u.CAMERA_SERVICE
            if client.services.get_service(required) is None:
                st.last_error = f"no {_service_name(required)} service: not a gridedge {w.kind}"
                self._emit_state(w.id, "rejected", reason="profile")
                return "profile"
            battery = await self._read(client, u.BATTERY_LEVEL)
            firmware = None
            with contextlib.suppress(*BLE_ERRORS, UnicodeDecodeError):
                firmware = (await self._read(client, u.FIRMWARE_REVISION)).decode()[:32]
            await client.start_notify(
                u.BATTERY_LEVEL, lambda _c, v: sess.queue.put_nowait(("battery", bytes(v)))
            )
            if w.kind == "sos_button":
                await client.start_notify(u.SOS_EVENT, lambda _c, v: sess.queue.put_nowait(("sos", bytes(v))))
            else:
                await client.start_notify(
                    u.CAMERA_STATE, lambda _c, v: sess.queue.put_nowait(("cam", bytes(v)))
                )
                await client.start_notify(
                    u.CAMERA_MARK, lambda _c, v: sess.queue.put_nowait(("mark", bytes(v)))
                )
                sess.queue.put_nowait(("cam", bytes(await self._read(client, u.CAMERA_STATE))))
            # "connected" (in the status and on the wire) only once notifications are on: a
            # press the moment the status says connected must reach the gateway.
            st.connects += 1
            st.state = "connected"
            st.rssi = rssi
            extra: dict[str, Any] = {"rssi": rssi, "firmware": firmware}
            self.sessions[w.id] = sess
            self._session_events.setdefault(w.id, asyncio.Event()).set()
            self._emit_state(w.id, "connected", **extra)
            self._battery(w.id, battery[:1])
            if w.kind == "body_camera" and self._camera_wanted.pop(w.id, 0.0) > time.monotonic():
                asyncio.get_running_loop().create_task(self._camera_start(sess, p.CameraReason.SOS))
            reason = await self._serve(sess)
            return reason
        finally:
            if self.sessions.get(w.id) is sess:
                del self.sessions[w.id]
                self._session_events.setdefault(w.id, asyncio.Event()).clear()
            if st.state == "connected":
                st.disconnects += 1
                st.state = "disconnected"
                self._emit_state(w.id, "disconnected", reason=reason)
            with contextlib.suppress(*BLE_ERRORS):
                async with asyncio.timeout(self.cfg.probe_timeout_s):
                    await client.disconnect()

    async def _serve(self, sess: _Session) -> str:
        """Handle notifications in order, probe for liveness; returns why the session ended."""
        st = self.stats[sess.w.id]
        next_probe = time.monotonic() + self.cfg.probe_s
        lost = asyncio.get_running_loop().create_task(sess.lost.wait())
        try:
            while not sess.lost.is_set():
                timeout = max(0.0, next_probe - time.monotonic())
                getter = asyncio.get_running_loop().create_task(sess.queue.get())
                done, _ = await asyncio.wait(
                    {getter, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    what, raw = getter.result()
                    await self._handle(sess, what, raw)
                    continue
                getter.cancel()
                if lost in done:
                    break
                try:
                    level = await self._read(sess.client, u.BATTERY_LEVEL)
                except BLE_ERRORS:
                    st.silent += 1
                    log.warning("ble: %s stopped answering; reconnecting", sess.w.id)
                    return "silent"
                self._battery(sess.w.id, level[:1])
                next_probe = time.monotonic() + self.cfg.probe_s
            return "lost"
        finally:
            lost.cancel()

    async def _read(self, client: BleakClient, char: str) -> bytes:
        async with asyncio.timeout(self.cfg.probe_timeout_s):
            return bytes(await client.read_gatt_char(char))

    async def _write(self, client: BleakClient, char: str, data: bytes) -> None:
        async with asyncio.timeout(self.cfg.probe_timeout_s):
            await client.write_gatt_char(char, data, response=True)

    async def _handle(self, sess: _Session, what: str, raw: bytes) -> None:
        st = self.stats[sess.w.id]
        if what == "sos":
            await self._on_sos(sess, raw)
        elif what == "battery":
            self._battery(sess.w.id, raw[:1])
        elif what == "cam":
            status = p.parse_camera_state(raw)
            if isinstance(status, Rejected):
                st.rejected += 1
                return
            if sess.camera is None or sess.camera.state != status.state:
                self._submit(
                    "camera.recording",
                    sess.w.id,
                    {
                        "device": sess.w.id,
                        "worker": sess.w.worker,
                        "state": status.state.name.lower(),
                        "recording": status.state == p.CameraState.RECORDING,
                        "storage_pct": status.storage_pct,
                    },
                )
            sess.camera = status
            self._battery(sess.w.id, bytes([status.battery_pct]))
        elif what == "mark":
            mark = p.parse_clip_mark(raw)
            if isinstance(mark, Rejected):
                st.rejected += 1
                return
            self._submit(
                "camera.mark",
                sess.w.id,
                {
                    "device": sess.w.id,
                    "worker": sess.w.worker,
                    "clip": mark.clip_id,
                    "offset_ms": mark.offset_ms,
                    "sha256": mark.sha256.hex(),
                },
            )

    def _battery(self, dev_id: str, raw: bytes) -> None:
        if len(raw) != 1 or raw[0] > 100:
            self.stats[dev_id].rejected += 1
            return
        pct, now = raw[0], time.monotonic()
        last = self._last_battery.get(dev_id)
        self.stats[dev_id].battery = pct
        if last is not None and last[0] == pct and now - last[1] < self.cfg.battery_report_s:
            return
        changed = last is None or last[0] != pct
        self._last_battery[dev_id] = (pct, now)
        self._submit("device.battery", dev_id, {"pct": pct}, prio=Prio.EVENT if changed else None)

    # -- the SOS path ---------------------------------------------------------------------------

    async def _on_sos(self, sess: _Session, raw: bytes) -> None:
        w, st = sess.w, self.stats[sess.w.id]
        ev = p.parse_sos_event(raw)
        if isinstance(ev, Rejected):
            st.rejected += 1
            log.warning("ble: %s: %s", w.id, ev.detail)
            return
        kind, answer = EVENT_KINDS[ev.type]
        guard = self.guard
        assert guard is not None  # restored before any session starts
        if not guard.fresh(w.id, ev, record=False):
            st.repeats += 1
            if guard.last(w.id) == (ev.counter, ev.uptime_ms):
                # The button did not hear our answer (it resends until it does): answer again.
                await self._feedback(sess, answer, ev.counter)
            return
        st.events += 1
        data: dict[str, Any] = {
            "device": w.id,
            "worker": w.worker,
            "counter": ev.counter,
            "uptime_ms": ev.uptime_ms,
        }
        if kind == "device.state":
            data["state"] = "connected"
            data["event"] = ev.type.name.lower()
        else:
            fix = self._last_fix()
            if fix is not None:
                data["fix"] = dict(fix)
        # Committed (fsync) together with the event's counter, in one transaction: after any
        # crash the gateway either has both (a resend is a repeat) or neither (a resend is new).
        state = (GUARD_KEY + w.id, _GUARD.pack(ev.counter, ev.uptime_ms))
        seq = await self._commit(kind, w.id, data, state=state)
        guard.record(w.id, ev)
        await self._feedback(sess, answer, ev.counter)
        if kind == "sos.alarm":
            st.alarms += 1
            if seq is not None:
                self._alarms[seq] = (w.id, ev.counter)
                while len(self._alarms) > 256:
                    self._alarms.popitem(last=False)
            self._worker_cameras(w.worker)

    async def _feedback(self, sess: _Session, pattern: p.Feedback, counter: int) -> bool:
        try:
            await self._write(sess.client, u.SOS_FEEDBACK, p.encode_feedback(pattern, counter))
            return True
        except BLE_ERRORS as exc:
            log.warning("ble: %s: feedback not written: %r", sess.w.id, exc)
            return False

    def _worker_cameras(self, worker: str) -> None:
        """An SOS asks the wearer's camera(s) to record (now, or when they next connect)."""
        for w in self._wearables().values():
            if w.kind != "body_camera" or w.worker != worker:
                continue
            sess = self.sessions.get(w.id)
            if sess is None:
                self._camera_wanted[w.id] = time.monotonic() + CAMERA_SOS_WINDOW_S
            else:
                asyncio.get_running_loop().create_task(self._camera_start(sess, p.CameraReason.SOS))

    async def _camera_start(self, sess: _Session, reason: p.CameraReason) -> None:
        try:
            await self._write(
                sess.client, u.CAMERA_CONTROL, p.encode_camera_control(p.CameraCommand.START, reason)
            )
        except BLE_ERRORS as exc:
            log.warning("ble: %s: recording not started: %r", sess.w.id, exc)
            self._camera_wanted[sess.w.id] = time.monotonic() + CAMERA_SOS_WINDOW_S

    async def client_for(self, dev_id: str, timeout: float) -> BleakClient:
        """The live connection to a wearable, waiting up to `timeout` for one (firmware updates)."""
        ev = self._session_events.setdefault(dev_id, asyncio.Event())
        async with asyncio.timeout(timeout):
            while (sess := self.sessions.get(dev_id)) is None or not sess.client.is_connected:
                ev.clear()
                await ev.wait()
        return sess.client

    # -- commands: deliveries to wearables ------------------------------------------------------

    def alarm_counter(self, alarm_seq: Any) -> int:
        hit = self._alarms.get(alarm_seq) if isinstance(alarm_seq, int) else None
        return hit[1] if hit is not None else 0

    async def deliver(self, dev_id: str, pattern: p.Feedback, counter: int = 0) -> str | None:
        """Show a pattern on a wearable; None when it got there, else the reason it did not."""
        sess = self.sessions.get(dev_id)
        if sess is None:
            return "not_connected"
        try:
            if sess.w.kind == "sos_button":
                await self._write(sess.client, u.SOS_FEEDBACK, p.encode_feedback(pattern, counter))
            else:
                reason = p.CameraReason.PLATFORM
                await self._write(
                    sess.client, u.CAMERA_CONTROL, p.encode_camera_control(p.CameraCommand.ALERT, reason)
                )
        except BLE_ERRORS as exc:
            return f"write_failed: {type(exc).__name__}"
        return None

    # -- reports --------------------------------------------------------------------------------

    def _emit_state(self, dev_id: str, state: str, **extra: Any) -> None:
        data = {"state": state, **{k: v for k, v in extra.items() if v is not None}}
        self._submit("device.state", dev_id, data)

    def states(self) -> dict[str, str]:
        return {k: s.state for k, s in self.stats.items()}

    def snapshot(self) -> dict[str, Any]:
        return {
            "backend": None if self.backend is None else self.backend.name,
            "unknown_adverts": self.unknown_adverts,
            "unknown_reported": self.unknown_reported,
            "wearables": {k: s.snapshot() for k, s in self.stats.items()},
        }


def _service_name(uuid: str) -> str:
    return {u.SOS_SERVICE: "sos", u.CAMERA_SERVICE: "camera"}.get(uuid, uuid)
