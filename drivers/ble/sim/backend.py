"""A bleak backend on a bumble host: bleak's API over a simulated (or any HCI) radio.

bleak's own bumble backend is not published, so this is a small one: it implements
bleak's `BaseBleakScanner` and `BaseBleakClient` on a bumble `Device` (the host
stack) talking HCI over a bumble transport, by default `tcp-client:host:port` to the
virtual controller of `python -m drivers.ble.sim`. The gateway's drivers use it
only through `BleakScanner` / `BleakClient` (see drivers/ble/transport.py); select it
with

    [ble]
    backend = "sim"
    [ble.options]
    hci = "tcp-client:127.0.0.1:7020"

Because the HCI link is real HCI, the same backend drives a USB or UART controller
that bumble supports (`hci = "usb:0"`, `"serial:/dev/ttyUSB0"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import Characteristic
from bumble.hci import Address
from bumble.transport import open_transport

from drivers.ble.transport import BleBackend

log = logging.getLogger(__name__)

T = TypeVar("T")
GATEWAY_ADDRESS = "C0:DE:00:00:00:01"
ATT_MTU = 247  # the simulated adapter's own (static random) address

_PROPS = {
    Characteristic.Properties.BROADCAST: "broadcast",
    Characteristic.Properties.READ: "read",
    Characteristic.Properties.WRITE_WITHOUT_RESPONSE: "write-without-response",
    Characteristic.Properties.WRITE: "write",
    Characteristic.Properties.NOTIFY: "notify",
    Characteristic.Properties.INDICATE: "indicate",
    Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES: "authenticated-signed-writes",
    Characteristic.Properties.EXTENDED_PROPERTIES: "extended-properties",
}


def uuid_str(u: UUID) -> str:
    """bumble UUID (16, 32 or 128 bit) to bleak's form: 128-bit, lower case."""
    return str(uuidlib.UUID(bytes=bytes(reversed(u.to_bytes(force_128=True)))))


def _addr_str(a: Address) -> str:
    return str(a.to_string(False)).upper()


class BumbleRadio:
    """One bumble host shared by every scanner and client of the gateway."""

    def __init__(self, device: Device, transport: Any) -> None:
        self.device = device
        self.transport = transport
        self.scanners: set[BumbleScannerBase] = set()
        self._scanning = False
        self.connect_lock = asyncio.Lock()  # bumble (like most controllers) initiates one at a time
        device.on("advertisement", self._on_advertisement)

    @property
    def alive(self) -> bool:
        return not self.transport.source.terminated.done()

    def _on_advertisement(self, adv: Advertisement) -> None:
        for s in list(self.scanners):
            s.on_advertisement(adv)

    async def want_scan(self, scanner: BumbleScannerBase, on: bool) -> None:
        (self.scanners.add if on else self.scanners.discard)(scanner)
        if self.scanners and not self._scanning:
            await self.device.start_scanning(filter_duplicates=False)
            self._scanning = True
        elif not self.scanners and self._scanning:
            self._scanning = False
            with contextlib.suppress(Exception):
                await self.device.stop_scanning()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.transport.close()


class BumbleScannerBase(BaseBleakScanner):
    radio: BumbleRadio  # bound by factory()

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **_kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)

    async def start(self) -> None:
        self.seen_devices = {}
        await self.radio.want_scan(self, True)

    async def stop(self) -> None:
        await self.radio.want_scan(self, False)

    def on_advertisement(self, adv: Advertisement) -> None:
        data = adv.data
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
        uuids: list[str] = []
        for t in (
            AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        ):
            for u in data.get_all(t):
                for one in u if isinstance(u, list) else [u]:
                    if isinstance(one, UUID) and uuid_str(one) not in uuids:
                        uuids.append(uuid_str(one))
        manufacturer: dict[int, bytes] = {}
        for item in data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA):
            if isinstance(item, tuple) and len(item) == 2:
                manufacturer[int(item[0])] = bytes(item[1])
        adv_data = AdvertisementData(
            local_name=name if isinstance(name, str) else None,
            manufacturer_data=manufacturer,
            service_data={},
            service_uuids=uuids,
            tx_power=None,
            rssi=int(adv.rssi),
            platform_data=(adv,),
        )
        address = _addr_str(adv.address)
        device = self.create_or_update_device(address, address, adv_data.local_name, adv.address, adv_data)
        if self.is_allowed_uuid(uuids):
            self.call_detection_callbacks(device, adv_data)


class BumbleClientBase(BaseBleakClient):
    radio: BumbleRadio  # bound by factory()

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        **_kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        self._target = details if isinstance(details, Address) else Address(self.address)
        self._conn: Connection | None = None
        self._peer: Peer | None = None
        self._closing = False

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return int(self._conn.att_mtu) if self._conn is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._conn is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        async with self.radio.connect_lock:
            try:
                conn = await self.radio.device.connect(self._target, timeout=self._timeout)
            except Exception as exc:  # bumble raises its own error types; bleak callers expect BleakError
                raise BleakError(f"connect to {self.address}: {exc!r}") from exc
        self._conn = conn
        conn.on("disconnection", self._on_disconnection)
        peer = Peer(conn)
        self._peer = peer
        try:
            async with asyncio.timeout(self._timeout):
                # Clip marks are 44 bytes: ask for a larger ATT MTU than the default 23, as BlueZ does.
                await peer.request_mtu(ATT_MTU)
                await peer.discover_services()
                collection = BleakGATTServiceCollection()
                for svc in peer.services:
                    await svc.discover_characteristics()
                    service = BleakGATTService(svc, svc.handle, uuid_str(svc.uuid))
                    collection.add_service(service)
                    for ch in svc.characteristics:
                        await peer.discover_descriptors(ch)
                        props = cast(Any, [name for flag, name in _PROPS.items() if ch.properties & flag])
                        char = BleakGATTCharacteristic(
                            ch, ch.handle, uuid_str(ch.uuid), props, lambda: self.mtu_size - 3, service
                        )
                        collection.add_characteristic(char)
                        for d in ch.descriptors:
                            collection.add_descriptor(
                                BleakGATTDescriptor(d, d.handle, uuid_str(d.type), char)
                            )
                self.services = collection
        except Exception as exc:
            await self.disconnect()
            raise BleakError(f"service discovery on {self.address}: {exc!r}") from exc

    def _on_disconnection(self, _reason: int) -> None:
        self._conn = None
        self._peer = None
        if not self._closing and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        conn, self._closing = self._conn, True
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()
        self._conn = None
        self._peer = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("pairing is not supported by the bumble backend")

    async def unpair(self) -> None:
        raise BleakError("pairing is not supported by the bumble backend")

    async def _gatt(self, op: Awaitable[T]) -> T:
        """bumble's ATT and link errors as BleakError, as bleak's callers expect."""
        try:
            return await op
        except BleakError:
            raise
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as exc:
            raise BleakError(f"{self.address}: {exc!r}") from exc

    def _need_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError(f"{self.address} is not connected")
        return self._peer

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._gatt(self._need_peer().read_value(characteristic.obj)))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._gatt(self._need_peer().read_value(descriptor.obj)))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        await self._gatt(
            self._need_peer().write_value(characteristic.obj, bytes(data), with_response=response)
        )

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        await self._gatt(self._need_peer().write_value(descriptor.obj, bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        await self._gatt(self._need_peer().subscribe(characteristic.obj, lambda v: callback(bytearray(v))))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        await self._gatt(self._need_peer().unsubscribe(characteristic.obj))


async def open_radio(hci: str, address: str = GATEWAY_ADDRESS) -> BumbleRadio:
    transport = await open_transport(hci)
    device = Device.with_hci("gridedge", Address(address), transport.source, transport.sink)
    await device.power_on()
    return BumbleRadio(device, transport)


async def factory(options: Mapping[str, str]) -> BleBackend:
    """The `[ble] backend` factory: options `hci` (a bumble transport spec) and `address`."""
    hci = options.get("hci")
    if not hci:
        raise ValueError('the bumble backend needs [ble.options] hci = "tcp-client:host:port" (or usb:0 ...)')
    radio = await open_radio(hci, options.get("address", GATEWAY_ADDRESS))
    scanner = type("BumbleScanner", (BumbleScannerBase,), {"radio": radio})
    client = type("BumbleClient", (BumbleClientBase,), {"radio": radio})
    return BleBackend(
        "bumble:" + hci, scanner=scanner, client=client, aclose=radio.close, alive=lambda: radio.alive
    )
