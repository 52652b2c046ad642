"""Simulated wearables: SOS buttons and body cameras as bumble devices with real GATT.

Each wearable is a bumble host on its own virtual controller; all controllers share
one `LocalLink` (the air). A gateway reaches that air over HCI: `SimAir.serve_hci`
gives every TCP client (a gateway process using drivers/ble/sim/backend.py) a fresh
virtual controller, and when that client goes away (SIGKILL included) its links are
torn down the way a real link would time out, so the wearables advertise again.

The GATT tables follow docs/ble-profiles.md exactly (UUIDs from drivers/ble/uuids.py,
bytes from drivers/ble/profiles.py): a device maker's firmware would do the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bumble import hci, ll
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, StreamPacketSink, StreamPacketSource

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.kinds import man_down as md
from drivers.ble.rpa import make_rpa
from drivers.ble.sim.smp_server import SimSmpServer

log = logging.getLogger(__name__)

RESEND_S = 0.5  # a button resends an unanswered event this often (docs/ble-profiles.md)
CONNECTION_TIMEOUT = 0x08  # HCI error code: the link supervision timeout


class _CentralController(Controller):
    """bumble's virtual controller, plus what a real one does when a connection attempt is
    cancelled (the device is not there): report it failed, so the host can try again."""

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending, self.pending_le_connection = self.pending_le_connection, None
        if pending is not None:
            failed = hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
            asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class _HciClient(StreamPacketSource):
    """One gateway connected over TCP: a virtual controller of its own on the shared air."""

    def __init__(self, air: SimAir) -> None:
        super().__init__()
        self.air = air
        self.controller: _CentralController | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.WriteTransport):
            raise TypeError("the HCI link needs a writable transport")
        self.air.hci_clients += 1
        self.controller = _CentralController(
            f"gw{self.air.hci_clients}",
            host_source=self,
            host_sink=StreamPacketSink(transport),
            link=self.air.link,
            public_address=f"C0:00:00:00:00:{self.air.hci_clients % 256:02X}",
        )

    def connection_lost(self, exc: Exception | None) -> None:
        ctrl, self.controller = self.controller, None
        if ctrl is None:
            return
        # The host is gone: its links drop as if out of range, so the wearables see a
        # disconnection and advertise again (a real controller unplugged does the same).
        for conn in list(ctrl.le_connections.values()):
            with contextlib.suppress(Exception):
                conn.send_ll_control_pdu(ll.TerminateInd(CONNECTION_TIMEOUT))
        ctrl.le_connections.clear()
        ctrl.host = None
        self.air.link.remove_controller(ctrl)


W = TypeVar("W", bound="SimWearable")


class SimAir:
    """The shared radio medium: wearables on it, gateways reach it over HCI/TCP."""

    def __init__(self) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self.hci_clients = 0
        self.wearables: dict[str, SimWearable] = {}
        self._servers: list[asyncio.AbstractServer] = []

    async def serve_hci(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _HciClient(self), host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def local_host(self, name: str, address: str) -> Device:
        """A bumble host on a controller of this air (a wearable, or an in-process central)."""
        ctrl = Controller(name, link=self.link, public_address=address)
        return Device(name=name, address=Address(address), host=Host(ctrl, AsyncPipeSink(ctrl)))

    async def add(self, w: W) -> W:
        self.wearables[w.id] = w
        await w.start(self)
        return w

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        for w in self.wearables.values():
            await w.stop()


@dataclass
class FeedbackSeen:
    at: float  # time.monotonic()
    pattern: p.Feedback
    counter: int
    repeat: int = 0
    duration_ms: int = 0


@dataclass
class SimWearable:
    """What every gridedge wearable has: advertising, battery, device information."""

    id: str
    address: str  # identity address (public/static); with `irk`, the advertised address is an RPA
    irk: bytes | None = None
    battery: int = 87
    firmware: str = "1.4.2"
    advertise_services: tuple[str, ...] = ()
    muted: bool = False  # "stops answering": reads and writes hang, notifications stop
    smp: SimSmpServer | None = None  # firmware updates over the SMP GATT service
    device: Device | None = None
    _smp_char: Characteristic[bytes] | None = None
    _smp_buf: bytearray = field(default_factory=bytearray)
    connections: int = 0
    _unmuted: asyncio.Event = field(default_factory=asyncio.Event)
    _link: asyncio.Condition = field(default_factory=asyncio.Condition)
    _battery_char: Characteristic[bytes] | None = None

    @property
    def air_address(self) -> str:
        if self.irk is None:
            return self.address
        return make_rpa(self.irk, hashlib.sha256(self.address.encode()).digest()[:3])

    def services(self) -> list[Service]:
        self._battery_char = Characteristic(
            u.BATTERY_LEVEL,
            Characteristic.Properties.READ | Characteristic.Properties.NOTIFY,
            Characteristic.READABLE,
            CharacteristicValue(read=self._gate(lambda _c: bytes([self.battery]))),
        )
        info = [
            (u.MANUFACTURER_NAME, b"gridedge-sim"),
            (u.MODEL_NUMBER, type(self).__name__.encode()),
            (u.SERIAL_NUMBER, self.id.encode()),
            (u.FIRMWARE_REVISION, self.firmware.encode()),
        ]
        smp = []
        if self.smp is not None:
            self._smp_char = Characteristic(
                u.SMP_CHARACTERISTIC,
                Characteristic.Properties.WRITE_WITHOUT_RESPONSE | Characteristic.Properties.NOTIFY,
                Characteristic.WRITEABLE,
                CharacteristicValue(write=self._smp_write),
            )
            self.smp.on_reset = self._smp_reboot
            smp = [Service(u.SMP_SERVICE, [self._smp_char])]
        return [
            *smp,
            Service(u.BATTERY_SERVICE, [self._battery_char]),
            Service(
                u.DEVICE_INFORMATION,
                [
                    Characteristic(k, Characteristic.Properties.READ, Characteristic.READABLE, v)
                    for k, v in info
                ],
            ),
        ]

    def _smp_write(self, conn: Connection, value: bytes) -> None:
        """SMP requests arrive in MTU-sized writes; a complete frame is answered by notifications."""
        buf = self._smp_buf
        buf += bytes(value)
        while len(buf) >= 8:
            size = 8 + int.from_bytes(buf[2:4], "big")
            if len(buf) < size:
                return
            frame = bytes(buf[:size])
            del buf[:size]
            if self.smp is None:  # no SMP service, so no write reaches here
                return
            reply = self.smp.handle(frame)
            asyncio.get_running_loop().create_task(self._smp_reply(conn, reply))

    async def _smp_reply(self, conn: Connection, reply: bytes) -> None:
        if self.device is None or self._smp_char is None:
            return
        step = max(20, int(conn.att_mtu) - 3)
        for i in range(0, len(reply), step):
            with contextlib.suppress(Exception):
                await self.device.notify_subscriber(conn, self._smp_char, reply[i : i + step])

    def _smp_reboot(self) -> None:
        """After an SMP reset the device reboots: its link drops a moment later."""
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, lambda: loop.create_task(self.drop_link()))

    def _gate(self, fn: Callable[[Connection], bytes]) -> Callable[[Connection], Awaitable[bytes]]:
        async def read(conn: Connection) -> bytes:
            await self._unmuted.wait()
            return fn(conn)

        return read

    def _gated_write(self, fn: Callable[[bytes], None]) -> Callable[[Connection, bytes], Awaitable[None]]:
        async def write(_conn: Connection, value: bytes) -> None:
            await self._unmuted.wait()
            fn(bytes(value))

        return write

    async def start(self, air: SimAir) -> None:
        self.set_muted(self.muted)
        dev = air.local_host(self.id, self.air_address)
        for svc in self.services():
            dev.add_service(svc)
        dev.on("connection", self._on_connection)
        await dev.power_on()
        ad = [(AdvertisingData.COMPLETE_LOCAL_NAME, self.id.encode()[:20])]
        for s in self.advertise_services:
            ad.append((AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, UUID(s).to_bytes()))
        dev.advertising_data = bytes(AdvertisingData(ad))
        self.device = dev
        await dev.start_advertising(
            auto_restart=True, advertising_interval_min=100, advertising_interval_max=100
        )

    def _on_connection(self, conn: Connection) -> None:
        self.connections += 1
        conn.on("disconnection", lambda _reason: self._link_changed())
        self._link_changed()

    def _link_changed(self) -> None:
        async def wake() -> None:
            async with self._link:
                self._link.notify_all()

        asyncio.get_running_loop().create_task(wake())

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._link:
                await self._link.wait_for(lambda: self.connected)
        return self.connected

    @property
    def connected(self) -> bool:
        return self.device is not None and bool(self.device.connections)

    async def stop(self) -> None:
        if self.device is not None:
            with contextlib.suppress(Exception):
                await self.device.stop_advertising()
            for conn in list(self.device.connections.values()):
                with contextlib.suppress(Exception):
                    await conn.disconnect()

    def set_muted(self, muted: bool) -> None:
        self.muted = muted
        (self._unmuted.clear if muted else self._unmuted.set)()

    async def drop_link(self) -> None:
        """The peripheral ends the connection (walked out of range, power-cycled its radio)."""
        if self.device is not None:
            for conn in list(self.device.connections.values()):
                with contextlib.suppress(Exception):
                    await conn.disconnect()

    async def away(self) -> None:
        """Out of range: no adverts, no link, until `back`."""
        await self.stop()

    async def back(self) -> None:
        if self.device is not None and not self.device.is_advertising:
            await self.device.start_advertising(
                auto_restart=True, advertising_interval_min=100, advertising_interval_max=100
            )

    async def notify(self, char: Characteristic[Any] | None, value: bytes) -> None:
        if self.device is None or char is None or self.muted or not self.device.connections:
            return
        with contextlib.suppress(Exception):
            await self.device.notify_subscribers(char, value)

    async def set_battery(self, pct: int) -> None:
        self.battery = pct
        await self.notify(self._battery_char, bytes([pct]))

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "connected": self.connected,
            "battery": self.battery,
            "muted": self.muted,
        }
        if self.smp is not None:
            out["firmware"] = {
                "running": self.smp.slots[0].version,
                "confirmed": self.smp.slots[0].confirmed,
                "resets": self.smp.resets,
                "uploads": self.smp.requests,
            }
        return out


@dataclass
class SimSosButton(SimWearable):
    """An SOS button: events notified and resent until the gateway answers with feedback."""

    advertise_services: tuple[str, ...] = (u.SOS_SERVICE,)
    key: bytes | None = None  # its event key (docs/ble-profiles.md); None: version 1 events
    boots: int = 1  # its boot count, kept "in flash": goes up at every reboot
    counter: int = 0
    boot: float = field(default_factory=time.monotonic)
    feedback: list[FeedbackSeen] = field(default_factory=list)
    rejected_writes: int = 0
    _last: bytes = b""
    _pending: dict[int, tuple[bytes, asyncio.Future[float]]] = field(default_factory=dict)
    _event_char: Characteristic[bytes] | None = None
    _resender: asyncio.Task[None] | None = None

    def services(self) -> list[Service]:
        return [*super().services(), Service(u.SOS_SERVICE, self._counted(u.SOS_EVENT, u.SOS_FEEDBACK))]

    def _counted(self, event: str, feedback: str) -> list[Characteristic[bytes]]:
        """A counted-event characteristic (notify, read) and its feedback (write)."""
        self._event_char = Characteristic(
            event,
            Characteristic.Properties.READ | Characteristic.Properties.NOTIFY,
            Characteristic.READABLE,
            CharacteristicValue(read=self._gate(lambda _c: self._last or bytes(8))),
        )
        fb: Characteristic[bytes] = Characteristic(
            feedback,
            Characteristic.Properties.WRITE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._gated_write(self._on_feedback)),
        )
        return [self._event_char, fb]

    def _on_feedback(self, raw: bytes) -> None:
        fb = p.parse_feedback(raw)
        if not isinstance(fb, p.FeedbackWrite):
            self.rejected_writes += 1
            return
        self.feedback.append(
            FeedbackSeen(time.monotonic(), fb.pattern, fb.counter, fb.repeat, fb.duration_ms)
        )
        if fb.pattern in (p.Feedback.RECEIVED, p.Feedback.CANCELLED):
            pending = self._pending.pop(fb.counter, None)
            if pending is not None and not pending[1].done():
                pending[1].set_result(time.monotonic())

    def press(self, kind: p.SosEventType) -> tuple[int, asyncio.Future[float]]:
        """Generate an event; the future resolves (monotonic time) when the gateway answers."""
        return self.emit(int(kind))

    def emit(self, kind: int) -> tuple[int, asyncio.Future[float]]:
        """A counted event of type `kind`, resent until the gateway answers it."""
        self.counter = (self.counter + 1) & 0xFFFF
        uptime = int((time.monotonic() - self.boot) * 1000)
        raw = p.encode_counted(kind, self.counter, uptime, key=self.key, boot=self.boots)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending[self.counter] = (raw, fut)
        self._last = raw
        asyncio.get_running_loop().create_task(self.notify(self._event_char, raw))
        if self._resender is None or self._resender.done():
            self._resender = asyncio.get_running_loop().create_task(self._resend())
        return self.counter, fut

    async def replay(self, raw: bytes) -> None:
        """Send bytes as an event notification (a replayed or forged event)."""
        await self.notify(self._event_char, raw)

    async def _resend(self) -> None:
        while self._pending:
            await asyncio.sleep(RESEND_S)
            for raw, fut in list(self._pending.values()):
                if not fut.done():
                    await self.notify(self._event_char, raw)

    def reboot(self) -> None:
        """Counters live in RAM: a reboot restarts them (the boot count goes up and the uptime
        back, which the gateway sees)."""
        self.counter = 0
        self.boots += 1
        self.boot = time.monotonic()
        self._pending.clear()

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "counter": self.counter,
            "pending": sorted(self._pending),
            "feedback": [[f.pattern.name.lower(), f.counter] for f in self.feedback[-20:]],
            # how each alert was shown: the level is in the repeat and the duration
            "alerts": [
                [f.repeat, f.duration_ms] for f in self.feedback[-20:] if f.pattern == p.Feedback.ALERT
            ],
        }


@dataclass
class SimManDownTag(SimSosButton):
    """A lone worker's man-down tag: fall and no-motion events, resent until answered as a
    button's are, and a check-in every `interval_s` while `checking_in`."""

    advertise_services: tuple[str, ...] = (md.SERVICE,)
    interval_s: int = 60
    checking_in: bool = True
    _checkins: asyncio.Task[None] | None = None

    def services(self) -> list[Service]:
        counted = self._counted(md.EVENT, md.FEEDBACK)
        interval: Characteristic[bytes] = Characteristic(
            md.CHECKIN_INTERVAL,
            Characteristic.Properties.READ,
            Characteristic.READABLE,
            CharacteristicValue(read=self._gate(lambda _c: md.encode_interval(self.interval_s))),
        )
        return [*SimWearable.services(self), Service(md.SERVICE, [*counted, interval])]

    async def start(self, air: SimAir) -> None:
        await super().start(air)
        self._checkins = asyncio.get_running_loop().create_task(self._check_in())

    async def _check_in(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.checking_in and self.connected:
                self.emit(md.ManDownEventType.CHECK_IN)

    async def stop(self) -> None:
        if self._checkins is not None:
            self._checkins.cancel()
        await super().stop()


@dataclass
class SimBodyCamera(SimWearable):
    """A body camera: recording state, storage, clip marks; starts recording when asked."""

    advertise_services: tuple[str, ...] = (u.CAMERA_SERVICE,)
    recording: p.CameraState = p.CameraState.IDLE
    storage_pct: int = 64
    controls: list[tuple[int, int]] = field(default_factory=list)
    screen: bool = True  # it has the optional Alert Text characteristic
    texts: list[tuple[int, str]] = field(default_factory=list)  # alerts shown on its screen (level, text)
    clip: int = 0
    _state_char: Characteristic[bytes] | None = None
    _mark_char: Characteristic[bytes] | None = None

    def _state_bytes(self) -> bytes:
        return p.encode_camera_state(p.CameraStatus(self.recording, self.storage_pct, self.battery))

    def services(self) -> list[Service]:
        self._state_char = Characteristic(
            u.CAMERA_STATE,
            Characteristic.Properties.READ | Characteristic.Properties.NOTIFY,
            Characteristic.READABLE,
            CharacteristicValue(read=self._gate(lambda _c: self._state_bytes())),
        )
        self._mark_char = Characteristic(
            u.CAMERA_MARK, Characteristic.Properties.NOTIFY, Characteristic.READABLE, bytes(44)
        )
        control: Characteristic[bytes] = Characteristic(
            u.CAMERA_CONTROL,
            Characteristic.Properties.WRITE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._gated_write(self._on_control)),
        )
        chars = [self._state_char, self._mark_char, control]
        if self.screen:
            chars.append(
                Characteristic(
                    u.CAMERA_TEXT,
                    Characteristic.Properties.WRITE,
                    Characteristic.WRITEABLE,
                    CharacteristicValue(write=self._gated_write(self._on_text)),
                )
            )
        return [*super().services(), Service(u.CAMERA_SERVICE, chars)]

    def _on_text(self, raw: bytes) -> None:
        got = p.parse_alert_text(raw)
        if isinstance(got, tuple):
            self.texts.append((int(got[0]), got[1]))

    def _on_control(self, raw: bytes) -> None:
        if len(raw) != 2:
            return
        self.controls.append((raw[0], raw[1]))
        if raw[0] == p.CameraCommand.START and self.recording != p.CameraState.RECORDING:
            self.recording = p.CameraState.RECORDING
            self.clip += 1
            asyncio.get_running_loop().create_task(self.notify(self._state_char, self._state_bytes()))
        elif raw[0] == p.CameraCommand.STOP and self.recording == p.CameraState.RECORDING:
            self.recording = p.CameraState.IDLE
            asyncio.get_running_loop().create_task(self.notify(self._state_char, self._state_bytes()))
        elif raw[0] == p.CameraCommand.MARK:
            asyncio.get_running_loop().create_task(self.mark())

    async def mark(self, offset_ms: int = 1000) -> bytes:
        digest = hashlib.sha256(f"{self.id}/clip{self.clip}".encode() + os.urandom(4)).digest()
        await self.notify(self._mark_char, p.encode_clip_mark(p.ClipMark(self.clip, offset_ms, digest)))
        return digest

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "recording": self.recording.name.lower(),
            "controls": self.controls,
            "texts": self.texts,
        }
