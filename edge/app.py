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
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bleak import BleakClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.ais.driver import AisDriver
from drivers.ais.tracker import VesselTracker
from drivers.base import StreamDriver
from drivers.ble.driver import BleManager
from drivers.ble.kinds.base import Delivery
from drivers.ble.profiles import Feedback
from drivers.ble.transport import resolve_factory
from drivers.dsc.driver import DscDriver
from drivers.gnss.driver import GnssDriver
from drivers.gnss.parse import Fix
from edge import __version__
from edge.base.clock import Clock, TimeQuality, boottime_ms
from edge.base.config import AisDevice, Config, DeviceConfig, GnssDevice
from edge.base.envelope import Signer, load_private_key, load_public_key
from edge.base.errors import ConfigError
from edge.base.fsutil import write_atomic
from edge.base.messages import Incoming
from edge.base.registry import BadEntry, Registry, wearable_from
from edge.base.supervisor import Backoff, supervise
from edge.commands import Command, CommandHandler
from edge.commands import Rejected as CommandRejected
from edge.health import sd_notify, serve_status, watchdog
from edge.ingest import Ingest, start_epoch
from edge.outbox import CorruptOutbox, Limits, Outbox
from edge.publisher import Publisher
from edge.reconfig import (
    DEFAULT_ROLLBACK_S,
    BundleError,
    apply_bundle,
    confirm,
    open_bundle,
    pending_deadline_tb,
    read_pending,
    rollback,
)
from firmware_bridge.bridge import FirmwareBridge, UpdateRejected

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 5.0
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
        raise ConfigError("gateway.state_dir", f"{state_dir} is not writable: {exc.strerror}") from None


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
    limits = Limits(max_bytes=cfg.outbox.max_bytes, ttl_s=cfg.outbox.ttl_s)
    floor = read_seq_floor(state_dir) + 1
    try:
        outbox = await Outbox(path, limits=limits, seq_floor=floor).__aenter__()
    except CorruptOutbox as exc:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
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


class ReloadRequested(Exception):
    """Stop this gateway's tasks and start again on `cfg` (same process, no restart)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__("reload")
        self.cfg = cfg


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
    """Run one gateway until it stops (None) or asks to be reloaded (the new config)."""
    reload: Config | None = None
    try:
        await Gateway(cfg).run()
    except* ReloadRequested as group:
        last = group.exceptions[-1]
        if isinstance(last, ReloadRequested):
            reload = last.cfg
    return reload


def load_signer(cfg: Config) -> Signer:
    try:
        return Signer(load_private_key(cfg.gateway.key.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ConfigError("gateway.key", f"cannot load Ed25519 key {cfg.gateway.key}: {exc}") from None


class Gateway:
    """One running gateway."""

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
        self._command_key_loaded: Ed25519PublicKey | None = None
        self.firmware_key = self._firmware_key()
        self.commands: CommandHandler | None = None
        self._reload: asyncio.Future[Config] | None = None
        self.last_fix: Fix | None = None
        self._anchored = False
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.ingest: Ingest | None = None
        self.ready = asyncio.Event()

    def _firmware_key(self) -> Ed25519PublicKey | None:
        path = self.cfg.trust.firmware_key
        if path is None:
            return None
        try:
            key = load_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError("trust.firmware_key", f"cannot load {path}: {exc}") from None
        others = [self.signer.public_key]
        with contextlib.suppress(ConfigError):  # a bad command key is reported where commands start
            command_key = self._command_key()
            if command_key is not None:
                others.append(command_key)
        if key in others:
            raise ConfigError("trust.firmware_key", "must be its own key, not the command or the gateway key")
        return key

    def _command_key(self) -> Ed25519PublicKey | None:
        """The platform's command key, read from disk once (the firmware key is checked
        against it at start, and the command handler trusts it)."""
        path = self.cfg.trust.command_key
        if path is None:
            return None
        if self._command_key_loaded is None:
            try:
                self._command_key_loaded = load_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError("trust.command_key", f"cannot load {path}: {exc}") from None
        return self._command_key_loaded

    async def _ble_client(self, dev_id: str, timeout: float) -> BleakClient:
        if self.ble is None:
            raise TimeoutError("the BLE radio is not running")
        return await self.ble.client_for(dev_id, timeout)

    def _on_time(self, utc_ms: int, tb: int) -> None:
        if self.clock.observe_gnss(utc_ms, tb) and not self._anchored:
            self._anchor()

    def _anchor(self) -> None:
        """time.anchor: one instant on both clocks, so the platform can re-date earlier records."""
        if self.ingest is None:
            return
        st = self.clock.now()
        self._anchored = True
        self.ingest.submit("time.anchor", "gw", {"tb": st.tb, "tu": st.tu, "tq": st.tq}, stamp=st)

    def _on_fix(self, _dev: str, fix: Fix) -> None:
        self.last_fix = fix

    def fix_record(self) -> dict[str, Any] | None:
        """The latest GNSS fix for an alarm, with its age (a stale fix is still worth sending)."""
        fix = self.last_fix
        if fix is None:
            return None
        return {**fix.record(), "age_ms": max(0, boottime_ms() - fix.tb)}

    def snapshot(self) -> dict[str, Any]:
        ob, pub = self.outbox, self.publisher
        return {
            "gw": self.cfg.gateway.id,
            "version": __version__,
            "pid": os.getpid(),
            "epoch": None if self.ingest is None else self.ingest.epoch.counter,
            "clock": {"tq": self.clock.quality},
            "link": None
            if pub is None
            else {
                "state": pub.state.value,
                "sessions": pub.sessions,
                "published": pub.published,
                "acked": pub.acked,
                "last_error": pub.last_error,
                "failures": pub.failed_attempts,  # connection attempts failed since it was last up
                "life_safety_overtaken_max": pub.ls_overtaken_max,
                # the backlog's pacing (edge/pacing.py): how much of it may be in flight
                # now, how much queueing it sees, and the most of it an alarm found ahead
                "backlog_window": pub.backlog_window.allowed,
                "backlog_queueing_ms": round(pub.backlog_window.queueing_s * 1000, 1),
                "life_safety_backlog_ahead_max": pub.ls_backlog_ahead_max,
            },
            "outbox": None
            if ob is None
            else {
                "hw": ob.hw,
                "depth": ob.depth(),
                "lanes": {int(p): {"rows": s.rows, "bytes": s.bytes} for p, s in ob.stats.lanes.items()},
                "committed": ob.stats.committed,
                "commits": ob.stats.commits,
                "bytes": ob.usage,
                "max_bytes": ob.limits.max_bytes,
                "dropped": ob.stats.dropped,
                "refused": ob.stats.refused,
                "health": ob.health()["state"],
                "degraded": ob.degraded or "",
            },
            "devices": {k: d.counters.snapshot() for k, d in self.drivers.items()},
            "ais": {"duplicates": self.tracker.duplicates, "shaped": self.tracker.shaped},
            "commands": None
            if self.commands is None
            else {
                "accepted": self.commands.accepted,
                "rejected": dict(self.commands.rejected),
                "last_cseq": dict(self.commands.state.last),
            },
            "wearables": sorted(self.registry.devices),
            "ble": None if self.ble is None else self.ble.snapshot(),
            "firmware": None if self.firmware is None else self.firmware.snapshot(),
        }

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
            ingest = Ingest(
                gw=cfg.gateway.id,
                epoch=epoch,
                signer=self.signer,
                outbox=outbox,
                clock=self.clock,
                batch_ms=cfg.outbox.batch_ms,
            )
            self.ingest = ingest
            outbox.on_dropped = lambda rec: ingest.submit("outbox.dropped", "gw", rec)
            outbox.on_health = lambda rec: ingest.submit("gateway.health", "gw", rec)
            for rec in quarantined:
                ingest.submit("outbox.dropped", "gw", rec)
            if outbox.degraded:
                ingest.submit("gateway.health", "gw", outbox.health())
            self.firmware = FirmwareBridge(
                cfg.firmware,
                state_dir=state_dir,
                firmware_key=self.firmware_key,
                clock=self.clock,
                wearables=lambda: self.registry.devices,
                report=lambda kind, data: ingest.submit(kind, "gw", data),
                ble_client=self._ble_client,
            )
            commands = self._commands(ingest)
            fw_topic = f"{cfg.mqtt.topic_prefix}/{cfg.gateway.id}/fw/"
            subscriptions = (*commands.topics, fw_topic + "#") if commands else ()
            firmware = self.firmware

            def on_message(msg: Incoming) -> None:
                if msg.topic.startswith(fw_topic):
                    firmware.on_message(msg)
                elif commands is not None:
                    commands.on_message(msg)

            publisher = Publisher(
                mqtt=cfg.mqtt,
                gw=cfg.gateway.id,
                outbox=outbox,
                ingest=ingest,
                subscriptions=subscriptions,
                on_message=on_message if commands else None,
            )
            self.publisher = publisher
            if self.clock.quality in (TimeQuality.NTP, TimeQuality.GNSS):
                self._anchor()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(outbox.run(), name="outbox.writer")
                    tg.create_task(publisher.run(), name="publisher")
                    if commands is not None:
                        tg.create_task(commands.run(), name="commands")
                    tg.create_task(self._await_reload(), name="config.reload")
                    tg.create_task(self._confirm_config(), name="config.confirm")
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
                    tg.create_task(supervise("ble", self.ble.run, Backoff(0.5, 30.0)), name="ble.supervise")
                    tg.create_task(
                        supervise("firmware", firmware.run, Backoff(0.5, 30.0)), name="firmware.supervise"
                    )
                    if any(isinstance(d, AisDevice) for d in cfg.devices) and cfg.geofences:
                        tg.create_task(self._fleet_ticks(ingest), name="ais.geofence")
                    tg.create_task(serve_status(cfg.gateway.status_socket, self.snapshot), name="status")
                    tg.create_task(watchdog(), name="watchdog")
                    tg.create_task(keep_seq_floor(state_dir, outbox), name="outbox.seq_floor")
                    sd_notify("READY=1")
                    self.ready.set()
            finally:
                sd_notify("STOPPING=1")
                ingest.flush_all()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                        await stack.aclose()
                write_seq_floor(state_dir, outbox.hw)

    def _commands(self, ingest: Ingest) -> CommandHandler | None:
        cfg = self.cfg
        trust = self._command_key()
        if trust is None:
            log.warning("no [trust] command_key: platform commands are disabled")
            return None
        if trust == self.signer.public_key:
            raise ConfigError("trust.command_key", "is the gateway's own key; it must be the platform's")
        self.commands = CommandHandler(
            gw=cfg.gateway.id,
            groups=cfg.gateway.groups,
            prefix=cfg.mqtt.topic_prefix,
            trust=trust,
            clock=self.clock,
            state_path=cfg.gateway.state_dir / "commands.json",
            report=lambda kind, data: ingest.submit(kind, "gw", data),
            handlers={
                "sos.ack": self._cmd_sos_ack,
                "alert.broadcast": self._cmd_alert,
                "device.pair": self._cmd_pair,
                "device.unpair": self._cmd_unpair,
                "gateway.rebirth": self._cmd_rebirth,
                "diag.snapshot": self._cmd_diag,
                "config.apply": self._cmd_config_apply,
                "firmware.update": self._cmd_firmware,
            },
        )
        return self.commands

    # command handlers: each returns extra result fields or raises commands.Rejected

    async def _deliver(
        self, wearable: str, what: dict[str, Any], pattern: Feedback, counter: int = 0
    ) -> bool:
        """Show a pattern on one wearable and report in `alert.delivery` whether it got there."""
        ble = self.ble
        got = Delivery.NOT_CONNECTED if ble is None else await ble.deliver(wearable, pattern, counter)
        ok = got == Delivery.DELIVERED
        if self.ingest is not None:
            rec = {**what, "device": wearable, "ok": ok}
            if not ok:
                rec["error"] = got.value
            self.ingest.submit("alert.delivery", "gw", rec)
        return ok

    async def _cmd_sos_ack(self, cmd: Command) -> dict[str, Any]:
        device = cmd.args.get("device")
        if not isinstance(device, str) or device not in self.registry.devices:
            raise CommandRejected("unknown_device", cmd.id)
        seq = cmd.args.get("alarm_seq")
        counter = self.ble.alarm_counter(seq) if self.ble is not None else 0
        ok = await self._deliver(device, {"ack": cmd.id, "alarm_seq": seq}, Feedback.ACKNOWLEDGED, counter)
        return {"delivered": int(ok)}

    async def _cmd_alert(self, cmd: Command) -> dict[str, Any]:
        a = cmd.args
        if not isinstance(a.get("id"), str) or not isinstance(a.get("text"), str) or len(a["text"]) > 1000:
            raise CommandRejected("bad_args", cmd.id)
        if self.cfg.geofences:
            self.vessels_outside()
        what = {"alert": a["id"], "level": a.get("level")}
        devices = list(self.registry.devices)
        results = await asyncio.gather(*(self._deliver(d, what, Feedback.ALERT) for d in devices))
        return {"wearables": len(devices), "delivered": sum(results)}

    async def _cmd_pair(self, cmd: Command) -> dict[str, Any]:
        try:
            w = wearable_from(cmd.args)
        except BadEntry as exc:
            raise CommandRejected("bad_args", cmd.id, str(exc)) from None
        await asyncio.to_thread(self.registry.pair, w)
        if self.ble is not None:
            self.ble.refresh()
        return {"device": w.id}

    async def _cmd_unpair(self, cmd: Command) -> dict[str, Any]:
        dev = cmd.args.get("id")
        if not isinstance(dev, str) or not await asyncio.to_thread(self.registry.unpair, dev):
            raise CommandRejected("unknown_device", cmd.id)
        if self.ble is not None:
            self.ble.refresh()
        return {"device": dev}

    async def _cmd_rebirth(self, cmd: Command) -> dict[str, Any]:
        sent = self.publisher is not None and await self.publisher.rebirth()
        if self.ingest is not None:
            for dev_id, driver in self.drivers.items():
                self.ingest.submit("device.state", dev_id, {"state": driver.counters.state})
            if self.ble is not None:
                for dev_id, state in self.ble.states().items():
                    self.ingest.submit("device.state", dev_id, {"state": state})
        return {"birth": bool(sent)}

    async def _cmd_diag(self, cmd: Command) -> dict[str, Any]:
        if self.ingest is not None:
            self.ingest.submit("diag.snapshot", "gw", self.snapshot())
        return {}

    async def _cmd_config_apply(self, cmd: Command) -> dict[str, Any]:
        trust = self.commands.trust if self.commands is not None else None
        if trust is None:
            raise CommandRejected("unsupported", cmd.id)
        after = cmd.args.get("rollback_after_s", DEFAULT_ROLLBACK_S)
        if not isinstance(after, int | float) or isinstance(after, bool) or not 1 <= after <= 3600:
            raise CommandRejected("bad_args", cmd.id, "rollback_after_s")
        try:
            bundle = open_bundle(cmd.args.get("bundle"), trust, self.cfg)
            new_cfg = await asyncio.to_thread(apply_bundle, bundle, self.cfg, cmd.id, float(after))
        except BundleError as exc:
            raise CommandRejected(exc.code, cmd.id, exc.detail) from None
        except (ConfigError, OSError) as exc:
            raise CommandRejected("bad_config", cmd.id, str(exc)) from None
        # Reload once the result is committed (the handler reports it, then we go).
        asyncio.get_running_loop().call_soon(self._reload_soon, new_cfg)
        return {"applied": True, "rollback_after_s": after}

    def _reload_soon(self, cfg: Config) -> None:
        if self._reload is not None and not self._reload.done():
            self._reload.set_result(cfg)

    async def _await_reload(self) -> None:
        self._reload = asyncio.get_running_loop().create_future()
        cfg = await self._reload
        await asyncio.sleep(0.2)  # let the command's result be committed first
        raise ReloadRequested(cfg)

    async def _confirm_config(self) -> None:
        """After a config.apply: keep the new config once healthy, else roll back by itself."""
        pending = read_pending(self.cfg.gateway.state_dir)
        if pending is None:
            return
        deadline_tb = pending_deadline_tb(pending)
        while boottime_ms() < deadline_tb:
            pub, ob = self.publisher, self.outbox
            if (
                pub is not None
                and pub.state.value == "up"
                and ob is not None
                and (pub.acked > 0 or ob.depth() == 0)
            ):
                confirm(self.cfg.gateway.state_dir)
                log.info("config: %s is healthy; keeping it", self.cfg.applied or self.cfg.file)
                if self.ingest is not None:
                    self.ingest.submit(
                        "gateway.health",
                        "gw",
                        {"state": "ok", "reason": "config applied", "command": pending.get("id")},
                    )
                return
            await asyncio.sleep(0.5)
        log.error("config: not healthy within the rollback window; rolling back")
        previous = await asyncio.to_thread(rollback, self.cfg.gateway.state_dir, self.cfg.file)
        if previous is not None:
            if self.ingest is not None:
                self.ingest.submit(
                    "gateway.health",
                    "gw",
                    {"state": "degraded", "reason": "config rolled back", "command": pending.get("id")},
                )
            raise ReloadRequested(previous)

    async def _cmd_firmware(self, cmd: Command) -> dict[str, Any]:
        if self.firmware is None:
            raise CommandRejected("unsupported", cmd.id)
        try:
            return await self.firmware.command(cmd.args)
        except UpdateRejected as exc:
            raise CommandRejected(exc.code, cmd.id, exc.detail) from None

    async def outbox_room(self) -> None:
        if self.outbox is not None:
            await self.outbox.room()

    async def _fleet_ticks(self, ingest: Ingest) -> None:
        """Publish `vessels.outside` when the set of vessels outside a geofence changes."""
        while True:
            for kind, data in self.tracker.tick(boottime_ms()):
                ingest.submit(kind, "gw", data)
            await asyncio.sleep(1.0)

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
        tg.create_task(
            supervise(driver.name, driver.run, Backoff(0.2, 10.0)), name=f"{driver.name}.supervise"
        )
