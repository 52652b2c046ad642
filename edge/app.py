"""The gateway: wires config, outbox, publisher and drivers; owns every lifetime.

One AsyncExitStack (outbox) around one TaskGroup (writer, publisher, drivers,
status, watchdog). Cancelling the task (SIGTERM) stops the group; open telemetry
batches are then handed to the outbox, which commits them before closing, within
a bounded time. Nothing imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.ais.tracker import VesselTracker
from drivers.ble.driver import BleManager
from drivers.ble.profiles import AlertLevel
from drivers.ble.transport import resolve_factory
from drivers.gnss.parse import Fix
from drivers.parts import PARTS, Device, Parts
from edge import harbour
from edge.alarms import AlarmPath
from edge.commands import CommandHandler
from edge.config_watch import ConfigWatch, ReloadRequested
from edge.deliveries import Deliveries, Delivery, through
from edge.devices import Devices, raw_view
from edge.feeds import GpsdFeed, NmeaForwarder, fan_out
from edge.handlers import HANDLERS
from edge.health import STATUS, exit_if_stuck, sd_notify, serve_status, watchdog
from edge.ingest import Epoch, Ingest, start_epoch
from edge.outbox import CorruptOutbox, Limits, Outbox, OutboxHooks
from edge.posture import Effects, Posture
from edge.publisher import Publisher
from edge.reconfig import rollback
from edge.status import status_document, with_oldest
from edge.timekeeping import TimeKeeper
from edge.trust import TrustKeys
from edge.web.listen import WEB, serve_when_asked
from firmware_bridge.bridge import FirmwareBridge
from floor.clock import Clock, Stamp, boottime_ms
from floor.config import Config, PostureConfig
from floor.envelope import Signer, load_private_key
from floor.errors import CANNOT_LOAD, N_, ConfigError
from floor.fsutil import write_atomic
from floor.messages import Incoming
from floor.registry import Registry
from floor.supervisor import Backoff, supervise

if TYPE_CHECKING:
    from bleak import BleakClient

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 5.0
SEQ_FLOOR_EVERY_S = 10.0
# After a corrupt outbox is quarantined, seqs restart this far above the last recorded
# high-water mark (written every 10 s), so no seq the lost file held is ever reused.
QUARANTINE_SEQ_GAP = 1_000_000
# the record may lag this far behind (checked every SEQ_FLOOR_EVERY_S): far inside the gap
SEQ_FLOOR_SLACK = QUARANTINE_SEQ_GAP // 4


def check_state_dir(state_dir: Path) -> None:
    """Refuse to start on a state directory we cannot write: nothing could be kept."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("state_dir %s is full; starting degraded (life-safety uses the reserve)", state_dir)
            return
        raise ConfigError(
            "gateway.state_dir",
            N_("{file_path} is not writable: {why}"),
            file_path=state_dir,
            why=exc.strerror,
        ) from None


def read_seq_floor(state_dir: Path) -> int:
    """The last recorded high-water seq (0 if never recorded)."""
    try:
        text = (state_dir / "seq_hw").read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return 0
    return int(text) if text.isdigit() else 0


def write_seq_floor(state_dir: Path, hw: int, *, slack: int = 0) -> None:
    """Record the high-water seq atomically (a corrupt outbox must not make seqs go back),
    when it passed the recorded one by more than `slack`: a quarantined outbox's seqs
    restart QUARANTINE_SEQ_GAP above the record, so the file need not follow every seq
    (each write is an SD card's journal commit)."""
    if hw <= read_seq_floor(state_dir) + slack:
        return
    try:
        write_atomic(state_dir / "seq_hw", f"{hw}\n".encode())
    except OSError as exc:
        log.error("outbox: cannot record the seq high-water mark: %s", exc.strerror)


async def keep_seq_floor(state_dir: Path, outbox: Outbox) -> None:
    while True:
        await asyncio.sleep(SEQ_FLOOR_EVERY_S)
        await asyncio.to_thread(write_seq_floor, state_dir, outbox.reserved, slack=SEQ_FLOOR_SLACK)


@contextlib.asynccontextmanager
async def open_outbox(
    cfg: Config, quarantined: list[dict[str, Any]], hooks: OutboxHooks
) -> AsyncIterator[Outbox]:
    """Open the outbox; a corrupt one is moved aside (and reported) and a fresh one started."""
    state_dir = cfg.gateway.state_dir
    path = state_dir / "outbox.sqlite"
    limits = Limits(
        max_bytes=cfg.outbox.max_bytes, ttl_s=cfg.outbox.ttl_s, group_commit_s=cfg.outbox.commit_ms / 1000
    )
    floor = read_seq_floor(state_dir) + 1
    stack = AsyncExitStack()
    try:
        outbox = await stack.enter_async_context(Outbox(path, limits=limits, seq_floor=floor, hooks=hooks))
    except CorruptOutbox as exc:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm", ".suspect"):
            src = path.with_name(path.name + suffix)
            if src.exists():
                src.rename(path.with_name(f"{path.name}{suffix}.corrupt-{stamp}"))
        new_floor = floor + QUARANTINE_SEQ_GAP
        log.critical(
            "outbox: %s; quarantined it as *.corrupt-%s and started a fresh one at seq %d",
            exc,
            stamp,
            new_floor,
        )
        quarantined.append(
            {
                "reason": "quarantined",
                "count": new_floor - floor,
                "ranges": [[floor, new_floor - 1]],
                "kinds": {},
                "total": new_floor - floor,
                "detail": str(exc)[:200],
            }
        )
        outbox = await stack.enter_async_context(
            Outbox(path, limits=limits, seq_floor=new_floor, hooks=hooks)
        )
    async with stack:
        yield outbox


async def run_forever(cfg: Config, parts: Parts = PARTS) -> None:
    """Run the gateway; a config.apply or a rollback reloads it in place."""
    while True:
        try:
            reload = await _run_once(cfg, parts)
        except Exception as exc:
            # A pending config.apply that cannot even start (signer, backend, state dir,
            # TLS files...) is rolled back here, not left for the next start to fail on.
            previous = await asyncio.to_thread(rollback, cfg.gateway.state_dir, cfg.file, parts=cfg.parts)
            if previous is None:
                raise
            log.error("config: the applied config failed to start (%s); rolled back", exc)
            cfg = previous
            continue
        if reload is None:
            return
        cfg = reload
        log.warning("gateway: reloading with %s", cfg.applied or cfg.file)


async def _run_once(cfg: Config, parts: Parts) -> Config | None:
    """Run one gateway until it stops (None) or asks to be reloaded (the new config); an
    outbox found corrupt after the start is reopened (checked in full, quarantined)."""
    reload: Config | None = None
    try:
        await Gateway(cfg, parts=parts).run()
    except* ReloadRequested as group:
        last = group.exceptions[-1]
        if isinstance(last, ReloadRequested):
            reload = last.cfg
    except* CorruptOutbox:
        log.critical("gateway: restarting on a checked outbox")
        reload = cfg
    return reload


class CoreTasks(asyncio.TaskGroup):
    """The gateway's task group. When one of its tasks fails, the group cancels the rest;
    should any of them not end (a task that ignores its cancellation, a thread blocked in
    a driver), the process exits non-zero within STOP_WITHIN_S, and systemd starts it
    again, instead of living on deaf."""

    def __init__(self) -> None:
        super().__init__()
        self._timers: list[threading.Timer] = []

    def create_task(self, coro: Any, *, name: str | None = None, context: Any = None) -> asyncio.Task[Any]:
        task = super().create_task(coro, name=name, context=context)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._timers.append(exit_if_stuck(f"{task.get_name()} failed ({task.exception()!r})", 70))

    def torn_down(self) -> None:
        """Every task has ended: nothing to force (a reload goes on in this process)."""
        for timer in self._timers:
            timer.cancel()


def load_signer(cfg: Config) -> Signer:
    try:
        return Signer(load_private_key(cfg.gateway.key.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ConfigError("gateway.key", CANNOT_LOAD, file_path=cfg.gateway.key, why=exc) from None


class Gateway:
    """One running gateway: it owns each part's lifetime (outbox, publisher, commands,
    devices, wearables, firmware, deliveries, bearers, feeds, the page) and the few
    callbacks that join them. What any part does is in that part's module; the handlers
    see it through edge/handlers/base.GatewayView."""

    def __init__(self, cfg: Config, *, clock: Clock | None = None, parts: Parts = PARTS) -> None:
        self.cfg = cfg
        self.parts = parts
        self.clock = clock or Clock()
        self.signer = load_signer(cfg)
        self.time = TimeKeeper(self.clock, self._anchor)
        self.tracker = VesselTracker(cfg.ais, cfg.geofences)
        self.registry = Registry(
            cfg.gateway.state_dir / "devices.json", cfg.parts.wearables, seed=cfg.wearables
        )
        self.ble_factory = resolve_factory(cfg.ble.backend, dict(cfg.ble.options))
        self.trust = TrustKeys(cfg, self.signer.public_key)
        self.firmware_key = self.trust.firmware_key()
        self.watch = ConfigWatch(cfg, self._healthy, self._report_health)
        self.drivers: Mapping[str, Device] = {}
        self.ble: BleManager | None = None
        self.firmware: FirmwareBridge | None = None
        self.commands: CommandHandler | None = None
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.ingest: Ingest | None = None
        gpsd_devices = {d.id: d.kind for d in cfg.devices if parts.device(d).gpsd}
        self.gpsd = GpsdFeed(cfg.web.gpsd, gpsd_devices) if cfg.web.gpsd else None  # local tools' receivers
        self.nmea_out = (
            NmeaForwarder(cfg.web.nmea_udp, ais_only=cfg.web.nmea_ais_only) if cfg.web.nmea_udp else None
        )
        self.ready = asyncio.Event()
        self.deliveries = Deliveries(
            cfg.gateway.state_dir / "deliveries.json",
            show=through(lambda: self.ble),
            connected=lambda: set() if self.ble is None else set(self.ble.sessions),
            report=lambda rec: self._report("alert.delivery", rec),
        )
        self.alarms = AlarmPath(
            cfg,
            parts,
            registry=self.registry,
            deliveries=self.deliveries,
            ble=lambda: self.ble,
            report=self._report,
            clock_ms=self.clock_ms,
            devices=lambda: self.drivers,
        )
        self.posture = Posture(
            cfg.posture,
            state_file=cfg.gateway.state_dir / "posture.json",
            effects=posture_effects(self),
            report=lambda rec: self._report("gateway.posture", rec),
        )

    # the callbacks that join the parts -----------------------------------------------

    def _report(self, kind: str, rec: Mapping[str, Any]) -> None:
        """A record of the gateway's own (src `gw`), once there is an ingest to take it."""
        if self.ingest is not None:
            self.ingest.submit(kind, "gw", rec)

    def _anchor(self, rec: dict[str, Any], stamp: Stamp) -> None:
        if self.ingest is not None:
            self.ingest.submit("time.anchor", "gw", rec, stamp=stamp)

    def _on_fix(self, dev: str, fix: Fix) -> None:
        self.time.on_fix(fix)
        if self.gpsd is not None:
            self.gpsd.fix(dev, fix)

    async def _ble_client(self, dev_id: str, timeout: float) -> BleakClient:
        if self.ble is None:
            raise TimeoutError("the BLE radio is not running")
        return await self.ble.client_for(dev_id, timeout)

    def _worker_of(self, device: str) -> str | None:
        w = self.registry.devices.get(device)
        return None if w is None else w.worker

    def clock_ms(self) -> int:
        tu = self.clock.unix_ms()
        return tu if tu is not None else time.time_ns() // 1_000_000

    # the status document -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        pub, ob, cmds, ble, fw, fb = (
            self.publisher,
            self.outbox,
            self.commands,
            self.ble,
            self.firmware,
            self.alarms.fallback,
        )
        header = {
            "gw": self.cfg.gateway.id,
            "epoch": None if self.ingest is None else self.ingest.epoch.counter,
            # records accepted since the start (after shaping), whatever became of them
            "records": 0 if self.ingest is None else self.ingest.records,
        }
        return status_document(
            header,
            {
                "clock": self.time.snapshot,
                "link": None if pub is None else pub.snapshot,
                "life_safety": list if pub is None else pub.recent.snapshot,
                "gnss": self.time.fix_record,
                "outbox": None if ob is None else ob.snapshot,
                "devices": lambda: {k: d.snapshot() for k, d in self.drivers.items()},
                "ais": self.tracker.snapshot,
                "commands": None if cmds is None else cmds.snapshot,
                "wearables": lambda: sorted(self.registry.devices),
                "workers": lambda: {k: w.worker for k, w in self.registry.devices.items()},
                "ble": None if ble is None else ble.snapshot,
                "firmware": None if fw is None else fw.snapshot,
                "deliveries": self.deliveries.snapshot,
                "bearers": dict if fb is None else fb.snapshot,
                "alarms": self.alarms.snapshot,
                "posture": self.posture.snapshot,
                "feeds": lambda: {"gpsd": _snap(self.gpsd), "nmea_udp": _snap(self.nmea_out)},
                # who was turned away or timed out at the page and the status socket
                "listeners": lambda: {"web": WEB.snapshot(), "status": STATUS.snapshot()},
            },
        )

    async def full_snapshot(self) -> dict[str, Any]:
        return await with_oldest(self.snapshot(), self.outbox)

    # running -----------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.cfg
        state_dir = cfg.gateway.state_dir
        check_state_dir(state_dir)
        epoch = start_epoch(state_dir)
        log.info("gateway %s: epoch %d", cfg.gateway.id, epoch.counter)
        quarantined: list[dict[str, Any]] = []
        hooks = OutboxHooks(
            committed=self.alarms.committed,  # the publisher hears of rows as the outbox's `live`
            dropped=lambda rec: self._report("outbox.dropped", rec),
            health=lambda rec: self._report("gateway.health", rec),
        )
        async with AsyncExitStack() as stack:
            outbox = await stack.enter_async_context(open_outbox(cfg, quarantined, hooks))
            self.outbox = outbox
            ingest = self._ingest(epoch, outbox, quarantined)
            commands = self.commands = command_handler(self, ingest)
            self.publisher = uplink(
                self.cfg, ingest, outbox, commands=commands, firmware=self.firmware, alarms=self.alarms
            )
            outbox.attach(self.publisher)  # it may publish messages before they are written
            self.time.start(epoch.boot)
            core = CoreTasks()
            try:
                async with core as tg:
                    self._start(tg, ingest, outbox, commands)
                    sd_notify("READY=1")
                    self.ready.set()
            finally:
                core.torn_down()
                sd_notify("STOPPING=1")
                ingest.flush_all()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                        await stack.aclose()
                write_seq_floor(state_dir, outbox.reserved)

    def _ingest(self, epoch: Epoch, outbox: Outbox, quarantined: list[dict[str, Any]]) -> Ingest:
        """The ingest in front of the outbox; what the outbox reports goes through it."""
        ingest = Ingest(
            gw=self.cfg.gateway.id,
            epoch=epoch,
            signer=self.signer,
            outbox=outbox,
            clock=self.clock,
            batch_ms=self.cfg.outbox.batch_ms,
            worker_of=self._worker_of,
            posture=self.posture.current,
        )
        self.ingest = ingest
        for rec in quarantined + outbox.unsaved_at_open:
            ingest.submit("outbox.dropped", "gw", rec)
        if outbox.degraded:
            ingest.submit("gateway.health", "gw", outbox.health())
        self.firmware = FirmwareBridge(
            self.cfg.firmware,
            state_dir=self.cfg.gateway.state_dir,
            firmware_key=self.firmware_key,
            clock=self.clock,
            wearables=lambda: self.registry.devices,
            report=lambda kind, data: ingest.submit(kind, "gw", data),
            ble_client=self._ble_client,
        )
        return ingest

    def _start(
        self, tg: asyncio.TaskGroup, ingest: Ingest, outbox: Outbox, commands: CommandHandler | None
    ) -> None:
        """Every long-lived task of the gateway, in one task group."""
        cfg = self.cfg
        if cfg.geofences:  # before the first report is heard
            harbour.load(self.tracker, cfg.gateway.state_dir)
        tg.create_task(outbox.run(), name="outbox.writer")
        if self.publisher is not None:
            tg.create_task(self.publisher.run(), name="publisher")
        if commands is not None:
            tg.create_task(commands.run(), name="commands")
        tg.create_task(self.watch.await_reload(), name="config.reload")
        tg.create_task(self.watch.confirm(), name="config.confirm")
        self._devices(ingest, outbox).start(tg)
        self._wearables(tg, ingest, outbox)
        if self.firmware is not None:
            tg.create_task(
                supervise("firmware", self.firmware.run, Backoff(0.5, 30.0)), name="firmware.supervise"
            )
        if self.publisher is not None:
            pub = self.publisher
            self.alarms.start(
                tg,
                outbox=outbox,
                sign_compact=ingest.sign_compact,
                on_bearer=pub.recent.by_bearer,
                test_message=ingest.test_message,
                signature=ingest.signature,
            )
        if cfg.geofences:
            submit = lambda kind, data: ingest.submit(kind, "gw", data)  # noqa: E731
            tg.create_task(harbour.keep(self.tracker, cfg.gateway.state_dir, submit), name="ais.geofence")
        # the listeners: one that fails is started again, it never takes the gateway down
        status = functools.partial(serve_status, cfg.gateway.status_socket, self.full_snapshot)
        tg.create_task(supervise("status", status, Backoff(1.0, 30.0)), name="status")
        if self.gpsd is not None:
            tg.create_task(supervise("gpsd feed", self.gpsd.serve, Backoff(1.0, 30.0)), name="gpsd.feed")
        if cfg.web.listen:
            raw = functools.partial(raw_view, lambda: self.drivers)
            web = functools.partial(serve_when_asked, cfg.web, self.full_snapshot, raw)
            tg.create_task(supervise("web", web, Backoff(1.0, 30.0)), name="web")
        tg.create_task(watchdog(), name="watchdog")
        tg.create_task(self.time.watch(), name="clock.watch")
        tg.create_task(self.posture.run(), name="posture")
        tg.create_task(keep_seq_floor(cfg.gateway.state_dir, outbox), name="outbox.seq_floor")

    def _devices(self, ingest: Ingest, outbox: Outbox) -> Devices:
        devices = Devices(
            self.cfg.devices,
            self.parts,
            emit=ingest.submit,
            room=outbox.room,
            clock=self.clock,
            tracker=self.tracker,
            state_dir=self.cfg.gateway.state_dir,
            on_time=self.time.on_time,
            on_fix=self._on_fix,
            on_ais=None if self.gpsd is None else self.gpsd.ais,
            tap=fan_out([part.tap for part in (self.nmea_out, self.gpsd) if part is not None]),
        )
        self.drivers = devices
        return devices

    def _wearables(self, tg: asyncio.TaskGroup, ingest: Ingest, outbox: Outbox) -> None:
        self.ble = BleManager(
            self.cfg.ble,
            wearables=lambda: self.registry.devices,
            factory=self.ble_factory,
            submit=ingest.submit,
            commit=ingest.emit,
            last_fix=self.time.fix_record,
            read_state=outbox.read_state,
            on_connected=self.deliveries.connected,
        )
        tg.create_task(self.deliveries.run(), name="deliveries")
        tg.create_task(supervise("ble", self.ble.run, Backoff(0.5, 30.0)), name="ble.supervise")

    # what the handlers and the config watch ask --------------------------------------

    def reload_soon(self, cfg: Config) -> None:
        """Reload on `cfg` (after config.apply), once what is running now has reported."""
        self.watch.reload_soon(cfg)

    def _healthy(self) -> bool:
        """Connected, and the outbox draining: what a config.apply must show to be kept."""
        pub, ob = self.publisher, self.outbox
        return (
            pub is not None
            and pub.state.value == "up"
            and ob is not None
            and (pub.acked > 0 or ob.depth() == 0)
        )

    def _report_health(self, rec: dict[str, Any]) -> None:
        self._report("gateway.health", rec)

    def vessels_outside(self) -> None:
        """Publish the current `vessels.outside` snapshot now (a typhoon recall asks for it)."""
        for kind, data in self.tracker.tick(boottime_ms(), force=True):
            self._report(kind, data)


def uplink(
    cfg: Config,
    ingest: Ingest,
    outbox: Outbox,
    *,
    commands: CommandHandler | None,
    firmware: FirmwareBridge | None,
    alarms: AlarmPath,
) -> Publisher:
    """The uplink, subscribed to the command topics and this gateway's firmware chunks."""
    fw_topic = f"{cfg.mqtt.topic_prefix}/{cfg.gateway.id}/fw/"
    subscriptions = (*commands.topics, fw_topic + "#") if commands else ()

    def on_message(msg: Incoming) -> None:
        if msg.topic.startswith(fw_topic):
            if firmware is not None:
                firmware.on_message(msg)
        elif commands is not None:
            commands.on_message(msg)

    return Publisher(
        mqtt=cfg.mqtt,
        gw=cfg.gateway.id,
        outbox=outbox,
        ingest=ingest,
        subscriptions=subscriptions,
        on_message=on_message if commands else None,
        on_life_safety_ack=alarms.acked_by_broker,
        alarm_probe_s=cfg.alarms.failover_s,
    )


def _snap(part: GpsdFeed | NmeaForwarder | None) -> dict[str, Any] | None:
    return None if part is None else part.snapshot()


def posture_effects(gw: Gateway) -> Effects:
    """What emergency posture changes on this gateway (edge/posture.py)."""

    def apply(policy: PostureConfig | None) -> None:
        for device in gw.drivers.values():
            device.pace(None if policy is None else policy.positions_s)
        gw.tracker.fleet_interval_s = None if policy is None else policy.fleet_interval_s
        if gw.alarms.fallback is not None:
            gw.alarms.fallback.budget_factor = 1.0 if policy is None else policy.budget_factor

    async def alert(text: str, expires_ms: int) -> Mapping[str, Any]:
        devices = sorted(gw.registry.devices)
        if not devices:
            return {}
        report = {"alert": "posture", "level": "emergency"}
        level = int(AlertLevel.EMERGENCY)
        d = Delivery(f"alert:posture:{expires_ms}", report, expires_ms, devices, level=level, text=text)
        return await gw.deliveries.add(d)

    def status() -> None:
        gw._report("diag.snapshot", gw.snapshot())

    return Effects(apply=apply, alert=alert, recall=gw.vessels_outside, status=status)


def command_handler(gw: Gateway, ingest: Ingest) -> CommandHandler | None:
    """The platform's commands, verified against the trust anchor; None without one."""
    cfg = gw.cfg
    trust = gw.trust.command_key()
    if trust is None:
        log.warning("no [trust] command_key: platform commands are disabled")
        return None
    if trust == gw.signer.public_key:
        raise ConfigError("trust.command_key", N_("is the gateway's own key; it must be the platform's"))
    return CommandHandler(
        gw=cfg.gateway.id,
        groups=cfg.gateway.groups,
        prefix=cfg.mqtt.topic_prefix,
        trust=trust,
        clock=gw.clock,
        state_path=cfg.gateway.state_dir / "commands.json",
        report=lambda kind, data: ingest.submit(kind, "gw", data),
        handlers={kind: functools.partial(handle, gw) for kind, handle in HANDLERS.items()},
    )
