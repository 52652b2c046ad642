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
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.ais.driver import AisDriver
from drivers.ais.tracker import VesselTracker
from drivers.base import StreamDriver
from drivers.ble.driver import BleManager
from drivers.ble.transport import resolve_factory
from drivers.dsc.driver import DscDriver
from drivers.gnss.driver import GnssDriver
from drivers.gnss.parse import Fix
from edge import harbour
from edge.base.clock import Clock, TimeQuality, boottime_ms
from edge.base.config import AisDevice, Config, DeviceConfig, GnssDevice
from edge.base.envelope import Signer, load_private_key
from edge.base.errors import CANNOT_LOAD, N_, ConfigError
from edge.base.fsutil import write_atomic
from edge.base.messages import Incoming
from edge.base.registry import Registry
from edge.base.supervisor import Backoff, supervise
from edge.bearers.fallback import SecondBearer
from edge.bearers.sms import SmsBearer
from edge.commands import CommandHandler
from edge.config_watch import ConfigWatch, ReloadRequested
from edge.deliveries import Deliveries, through
from edge.feeds import GpsdFeed, NmeaForwarder
from edge.handlers import HANDLERS
from edge.health import sd_notify, serve_status, watchdog
from edge.ingest import Epoch, Ingest, start_epoch
from edge.outbox import CorruptOutbox, Limits, Outbox
from edge.publisher import LinkState, Publisher
from edge.reconfig import (
    rollback,
)
from edge.status import full_status, status_document
from edge.trust import TrustKeys
from edge.web.listen import serve_when_asked
from firmware_bridge.bridge import FirmwareBridge

if TYPE_CHECKING:
    from bleak import BleakClient

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 5.0
CLOCK_CHECK_S = 30.0
SEQ_FLOOR_EVERY_S = 10.0
# After a corrupt outbox is quarantined, seqs restart this far above the last recorded
# high-water mark (written every 10 s), so no seq the lost file held is ever reused.
QUARANTINE_SEQ_GAP = 1_000_000


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


def write_seq_floor(state_dir: Path, hw: int) -> None:
    """Record the high-water seq atomically (a corrupt outbox must not make seqs go back)."""
    if hw <= read_seq_floor(state_dir):
        return
    try:
        write_atomic(state_dir / "seq_hw", f"{hw}\n".encode())
    except OSError as exc:
        log.error("outbox: cannot record the seq high-water mark: %s", exc.strerror)


async def keep_seq_floor(state_dir: Path, outbox: Outbox) -> None:
    while True:
        await asyncio.sleep(SEQ_FLOOR_EVERY_S)
        await asyncio.to_thread(write_seq_floor, state_dir, outbox.hw)


@contextlib.asynccontextmanager
async def open_outbox(cfg: Config, quarantined: list[dict[str, Any]]) -> AsyncIterator[Outbox]:
    """Open the outbox; a corrupt one is moved aside (and reported) and a fresh one started."""
    state_dir = cfg.gateway.state_dir
    path = state_dir / "outbox.sqlite"
    limits = Limits(
        max_bytes=cfg.outbox.max_bytes, ttl_s=cfg.outbox.ttl_s, group_commit_s=cfg.outbox.commit_ms / 1000
    )
    floor = read_seq_floor(state_dir) + 1
    try:
        outbox = await Outbox(path, limits=limits, seq_floor=floor).__aenter__()
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
        outbox = await Outbox(path, limits=limits, seq_floor=new_floor).__aenter__()
    try:
        yield outbox
    finally:
        await outbox.__aexit__(None, None, None)


async def run_forever(cfg: Config) -> None:
    """Run the gateway; a config.apply or a rollback reloads it in place."""
    while True:
        try:
            reload = await _run_once(cfg)
        except Exception as exc:
            # A pending config.apply that cannot even start (signer, backend, state dir,
            # TLS files...) is rolled back here, not left for the next start to fail on.
            previous = await asyncio.to_thread(rollback, cfg.gateway.state_dir, cfg.file)
            if previous is None:
                raise
            log.error("config: the applied config failed to start (%s); rolled back", exc)
            cfg = previous
            continue
        if reload is None:
            return
        cfg = reload
        log.warning("gateway: reloading with %s", cfg.applied or cfg.file)


async def _run_once(cfg: Config) -> Config | None:
    """Run one gateway until it stops (None) or asks to be reloaded (the new config); an
    outbox found corrupt after the start is reopened (checked in full, quarantined)."""
    reload: Config | None = None
    try:
        await Gateway(cfg).run()
    except* ReloadRequested as group:
        last = group.exceptions[-1]
        if isinstance(last, ReloadRequested):
            reload = last.cfg
    except* CorruptOutbox:
        log.critical("gateway: restarting on a checked outbox")
        reload = cfg
    return reload


def load_signer(cfg: Config) -> Signer:
    try:
        return Signer(load_private_key(cfg.gateway.key.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ConfigError("gateway.key", CANNOT_LOAD, file_path=cfg.gateway.key, why=exc) from None


class Gateway:
    """One running gateway.

    Past the project's usual size because it is the wiring: it owns each part's
    lifetime (outbox, publisher, commands, drivers, wearables, firmware, deliveries,
    bearers, feeds, the page) and the few callbacks that join them (fixes to the clock
    and the feeds, wearables to workers, reload and rollback). What any part does is
    in that part's module; the handlers see it through edge/handlers/base.GatewayView."""

    def __init__(self, cfg: Config, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or Clock()
        self.signer = load_signer(cfg)
        self.drivers: dict[str, StreamDriver] = {}
        self.tracker = VesselTracker(cfg.ais, cfg.geofences)
        self.registry = Registry(cfg.gateway.state_dir / "devices.json", seed=cfg.wearables)
        self.ble_factory = resolve_factory(cfg.ble.backend, dict(cfg.ble.options))
        self.ble: BleManager | None = None
        self.firmware: FirmwareBridge | None = None
        self.trust = TrustKeys(cfg, self.signer.public_key)
        self.firmware_key = self.trust.firmware_key()
        self.commands: CommandHandler | None = None
        self.watch = ConfigWatch(cfg, self._healthy, self._report_health)
        self.last_fix: Fix | None = None
        self._anchored = False
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.ingest: Ingest | None = None
        self.second: SecondBearer | None = None  # life-safety by SMS when the uplink is down
        kinds = {d.id: d.kind for d in cfg.devices if d.kind in ("gnss", "ais")}
        self.gpsd = GpsdFeed(cfg.web.gpsd, kinds) if cfg.web.gpsd else None  # local tools' receivers
        self.nmea_out = (
            NmeaForwarder(cfg.web.nmea_udp, ais_only=cfg.web.nmea_ais_only) if cfg.web.nmea_udp else None
        )
        self.ready = asyncio.Event()
        self.deliveries = Deliveries(
            cfg.gateway.state_dir / "deliveries.json",
            show=through(lambda: self.ble),
            connected=lambda: set() if self.ble is None else set(self.ble.sessions),
            report=lambda rec: self.ingest and self.ingest.submit("alert.delivery", "gw", rec),
        )

    async def _ble_client(self, dev_id: str, timeout: float) -> BleakClient:
        if self.ble is None:
            raise TimeoutError("the BLE radio is not running")
        return await self.ble.client_for(dev_id, timeout)

    def _on_time(self, utc_ms: int, tb: int) -> None:
        refused = self.clock.gnss_disagreements
        if self.clock.observe_gnss(utc_ms, tb) and not self._anchored:
            self._anchor()
        elif self.clock.gnss_disagreements > refused and refused % 600 == 0:
            log.warning(
                "clock: GNSS time %+d ms from the NTP-synchronised clock: not taken (%d so far)",
                self.clock.gnss_disagreement_ms,
                refused + 1,
            )

    async def _clock_watch(self) -> None:
        """Ask the system about NTP again every CLOCK_CHECK_S: a gateway that booted
        before its NTP client synchronised trusts its clock as soon as it does."""
        while True:
            await asyncio.sleep(CLOCK_CHECK_S)
            if self.clock.refresh():
                log.info("clock: NTP synchronised the system clock; trusted now")
                self._anchor()

    def _anchor(self) -> None:
        """time.anchor: one instant on both clocks, so the platform can re-date earlier records."""
        if self.ingest is None:
            return
        st = self.clock.now()
        self._anchored = True
        anchor = {"tb": st.tb, "tu": st.tu, "tq": st.tq, "boot": self.ingest.epoch.boot}
        self.ingest.submit("time.anchor", "gw", anchor, stamp=st)

    def _on_fix(self, dev: str, fix: Fix) -> None:
        self.last_fix = fix
        if self.gpsd is not None:
            self.gpsd.fix(dev, fix)

    def fix_record(self) -> dict[str, Any] | None:
        """The latest GNSS fix for an alarm, with its age (a stale fix is still worth sending)."""
        fix = self.last_fix
        if fix is None:
            return None
        return {**fix.record(), "age_ms": max(0, boottime_ms() - fix.tb)}

    def clock_ms(self) -> int:
        tu = self.clock.unix_ms()
        return tu if tu is not None else time.time_ns() // 1_000_000

    def snapshot(self) -> dict[str, Any]:
        return status_document(self)

    async def full_snapshot(self) -> dict[str, Any]:
        return await full_status(self)

    async def run(self) -> None:
        cfg = self.cfg
        state_dir = cfg.gateway.state_dir
        check_state_dir(state_dir)
        epoch = start_epoch(state_dir)
        log.info("gateway %s: epoch %d", cfg.gateway.id, epoch.counter)
        quarantined: list[dict[str, Any]] = []
        async with AsyncExitStack() as stack:
            outbox = await stack.enter_async_context(open_outbox(cfg, quarantined))
            self.outbox = outbox
            ingest = self._ingest(epoch, outbox, quarantined)
            commands = self._commands(ingest)
            self.publisher = self._publisher(ingest, outbox, commands)
            if self.clock.quality in (TimeQuality.NTP, TimeQuality.GNSS):
                self._anchor()
            try:
                async with asyncio.TaskGroup() as tg:
                    self._start(tg, ingest, outbox, commands)
                    sd_notify("READY=1")
                    self.ready.set()
            finally:
                sd_notify("STOPPING=1")
                ingest.flush_all()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                        await stack.aclose()
                write_seq_floor(state_dir, outbox.hw)

    def _worker_of(self, device: str) -> str | None:
        w = self.registry.devices.get(device)
        return None if w is None else w.worker

    def _ingest(self, epoch: Epoch, outbox: Outbox, quarantined: list[dict[str, Any]]) -> Ingest:
        """The ingest in front of the outbox; what the outbox reports goes through it."""
        ingest = Ingest(
            gw=self.cfg.gateway.id,
            epoch=epoch,
            signer=self.signer,
            outbox=outbox,
            clock=self.clock,
            batch_ms=self.cfg.outbox.batch_ms,
        )
        self.ingest = ingest
        ingest.worker_of = self._worker_of
        outbox.on_dropped = lambda rec: ingest.submit("outbox.dropped", "gw", rec)
        outbox.on_health = lambda rec: ingest.submit("gateway.health", "gw", rec)
        for rec in quarantined:
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

    def _publisher(self, ingest: Ingest, outbox: Outbox, commands: CommandHandler | None) -> Publisher:
        """The uplink, subscribed to the command topics and this gateway's firmware chunks."""
        cfg, firmware = self.cfg, self.firmware
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
        )

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
        for dev in cfg.devices:
            self._start_device(tg, dev, ingest)
        self.ble = BleManager(
            cfg.ble,
            wearables=lambda: self.registry.devices,
            factory=self.ble_factory,
            submit=ingest.submit,
            commit=ingest.emit,
            last_fix=self.fix_record,
            read_state=outbox.read_state,
        )
        self.ble.on_connected = self.deliveries.connected
        tg.create_task(self.deliveries.run(), name="deliveries")
        tg.create_task(supervise("ble", self.ble.run, Backoff(0.5, 30.0)), name="ble.supervise")
        if self.firmware is not None:
            tg.create_task(
                supervise("firmware", self.firmware.run, Backoff(0.5, 30.0)), name="firmware.supervise"
            )
        if cfg.sms.enabled and self.publisher is not None:
            self._second_bearer(tg, ingest, outbox, self.publisher)
        if cfg.geofences:
            submit = lambda kind, data: ingest.submit(kind, "gw", data)  # noqa: E731
            tg.create_task(harbour.keep(self.tracker, cfg.gateway.state_dir, submit), name="ais.geofence")
        tg.create_task(serve_status(cfg.gateway.status_socket, self.full_snapshot), name="status")
        if self.gpsd is not None:
            tg.create_task(self.gpsd.serve(), name="gpsd.feed")
        if cfg.web.listen:
            tg.create_task(serve_when_asked(cfg.web, self.full_snapshot), name="web")
        tg.create_task(watchdog(), name="watchdog")
        tg.create_task(self._clock_watch(), name="clock.watch")
        tg.create_task(keep_seq_floor(cfg.gateway.state_dir, outbox), name="outbox.seq_floor")

    def _second_bearer(self, tg: asyncio.TaskGroup, ingest: Ingest, outbox: Outbox, pub: Publisher) -> None:
        bearer = SmsBearer(self.cfg.sms)
        self.second = SecondBearer(
            bearer,
            self.cfg.sms,
            outbox=outbox,
            link_up=lambda: pub.state == LinkState.UP,
            sign_compact=ingest.sign_compact,
            state_file=self.cfg.gateway.state_dir / "sms.json",
        )
        self.second.on_sent = lambda _kind, seq, _parts: pub.recent.by_sms(seq)
        tg.create_task(supervise("sms", bearer.run, Backoff(1.0, 60.0)), name="sms.modem")
        tg.create_task(self.second.run(), name="sms.fallback")

    def _commands(self, ingest: Ingest) -> CommandHandler | None:
        cfg = self.cfg
        trust = self.trust.command_key()
        if trust is None:
            log.warning("no [trust] command_key: platform commands are disabled")
            return None
        if trust == self.signer.public_key:
            raise ConfigError("trust.command_key", N_("is the gateway's own key; it must be the platform's"))
        self.commands = CommandHandler(
            gw=cfg.gateway.id,
            groups=cfg.gateway.groups,
            prefix=cfg.mqtt.topic_prefix,
            trust=trust,
            clock=self.clock,
            state_path=cfg.gateway.state_dir / "commands.json",
            report=lambda kind, data: ingest.submit(kind, "gw", data),
            handlers={kind: functools.partial(handle, self) for kind, handle in HANDLERS.items()},
        )
        return self.commands

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
        if self.ingest is not None:
            self.ingest.submit("gateway.health", "gw", rec)

    async def outbox_room(self) -> None:
        if self.outbox is not None:
            await self.outbox.room()

    def vessels_outside(self) -> None:
        """Publish the current `vessels.outside` snapshot now (a typhoon recall asks for it)."""
        if self.ingest is not None:
            for kind, data in self.tracker.tick(boottime_ms(), force=True):
                self.ingest.submit(kind, "gw", data)

    def _start_device(self, tg: asyncio.TaskGroup, dev: DeviceConfig, ingest: Ingest) -> None:
        driver: StreamDriver
        if isinstance(dev, GnssDevice):
            driver = GnssDriver(
                dev,
                emit=ingest.submit,
                clock=self.clock,
                on_time=self._on_time,
                on_fix=self._on_fix,
                room=self.outbox_room,
            )
        elif isinstance(dev, AisDevice):
            driver = AisDriver(dev, emit=ingest.submit, tracker=self.tracker, room=self.outbox_room)
        else:
            driver = DscDriver(dev, emit=ingest.submit, room=self.outbox_room)
        self.drivers[dev.id] = driver
        if self.nmea_out is not None:
            driver.tap = self.nmea_out.tap
        if self.gpsd is not None and isinstance(driver, AisDriver):
            driver.on_report = self.gpsd.ais
        tg.create_task(
            supervise(driver.name, driver.run, Backoff(0.2, 10.0)), name=f"{driver.name}.supervise"
        )
