"""An SOS button as a BlueZ peripheral application (GATT server and advertisement over D-Bus).

Run against BlueZoo (a user-space org.bluez on a private bus) so that the gateway's
production path, bleak's BlueZ backend, is exercised end to end:

    DBUS_SYSTEM_BUS_ADDRESS=unix:path=... python -m tests.support.bluez_button --adapter hci1

It registers the gridedge SOS service (docs/ble-profiles.md) plus the Battery Service,
advertises the SOS service UUID, prints `READY`, then reads commands on stdin
(`press` = a long press) and prints `FEEDBACK <pattern> <counter>` for each feedback
the gateway writes. As the profile asks of a button, an event is notified again every
second until feedback carrying its counter says *received* or *cancelled*. Test support
only: a device maker's firmware does the same on a chip.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import sdbus

from drivers.ble import profiles as p
from drivers.ble import uuids as u

APP = "/com/gridedge/button"
FLAGS_NOTIFY = ["read", "notify"]


class Service(sdbus.DbusInterfaceCommonAsync, interface_name="org.bluez.GattService1"):
    def __init__(self, uuid: str, handle: int) -> None:
        super().__init__()
        self._uuid = uuid
        self._handle = handle

    @sdbus.dbus_property_async(property_signature="s")
    def UUID(self) -> str:
        return self._uuid

    @sdbus.dbus_property_async(property_signature="b")
    def Primary(self) -> bool:
        return True

    @sdbus.dbus_property_async(property_signature="q")
    def Handle(self) -> int:
        return self._handle


class Characteristic(sdbus.DbusInterfaceCommonAsync, interface_name="org.bluez.GattCharacteristic1"):
    def __init__(self, uuid: str, service: str, handle: int, flags: list[str], value: bytes = b"") -> None:
        super().__init__()
        self._uuid, self._service, self._handle, self._flags = uuid, service, handle, flags
        self._value = value
        self.notifying = False
        self.written: list[bytes] = []
        self.answered: set[int] = set()

    @sdbus.dbus_method_async(input_signature="a{sv}", result_signature="ay")
    async def ReadValue(self, options: dict[str, tuple[str, object]]) -> bytes:
        return self._value

    @sdbus.dbus_method_async(input_signature="aya{sv}", result_signature="")
    async def WriteValue(self, value: bytes, options: dict[str, tuple[str, object]]) -> None:
        self.written.append(bytes(value))
        fb = p.parse_feedback(bytes(value))
        if isinstance(fb, p.FeedbackWrite):
            if fb.pattern in (p.Feedback.RECEIVED, p.Feedback.CANCELLED):
                self.answered.add(fb.counter)
            print(f"FEEDBACK {fb.pattern.name.lower()} {fb.counter}", flush=True)

    @sdbus.dbus_method_async(input_signature="", result_signature="")
    async def StartNotify(self) -> None:
        self.notifying = True

    @sdbus.dbus_method_async(input_signature="", result_signature="")
    async def StopNotify(self) -> None:
        self.notifying = False

    @sdbus.dbus_method_async(input_signature="", result_signature="")
    async def Confirm(self) -> None:
        return None

    @sdbus.dbus_property_async(property_signature="s")
    def UUID(self) -> str:
        return self._uuid

    @sdbus.dbus_property_async(property_signature="o")
    def Service(self) -> str:
        return self._service

    @sdbus.dbus_property_async(property_signature="as")
    def Flags(self) -> list[str]:
        return self._flags

    @sdbus.dbus_property_async(property_signature="q")
    def Handle(self) -> int:
        return self._handle

    @sdbus.dbus_property_async(property_signature="ay", flags=sdbus.DbusPropertyEmitsChangeFlag)
    def Value(self) -> bytes:
        return self._value

    @Value.setter_private
    def _set_value(self, value: bytes) -> None:
        self._value = value


class Advertisement(sdbus.DbusInterfaceCommonAsync, interface_name="org.bluez.LEAdvertisement1"):
    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @sdbus.dbus_method_async(input_signature="", result_signature="")
    async def Release(self) -> None:
        return None

    @sdbus.dbus_property_async(property_signature="s")
    def Type(self) -> str:
        return "peripheral"

    @sdbus.dbus_property_async(property_signature="as")
    def ServiceUUIDs(self) -> list[str]:
        return [u.SOS_SERVICE]

    @sdbus.dbus_property_async(property_signature="s")
    def LocalName(self) -> str:
        return self._name

    @sdbus.dbus_property_async(property_signature="b")
    def Discoverable(self) -> bool:
        return True


class GattManager(sdbus.DbusInterfaceCommonAsync, interface_name="org.bluez.GattManager1"):
    @sdbus.dbus_method_async(input_signature="oa{sv}", result_signature="")
    async def RegisterApplication(self, application: str, options: dict[str, tuple[str, object]]) -> None:
        raise NotImplementedError


class AdvertisingManager(sdbus.DbusInterfaceCommonAsync, interface_name="org.bluez.LEAdvertisingManager1"):
    @sdbus.dbus_method_async(input_signature="oa{sv}", result_signature="")
    async def RegisterAdvertisement(self, advertisement: str, options: dict[str, tuple[str, object]]) -> None:
        raise NotImplementedError


class Adapter(sdbus.DbusInterfaceCommonAsync, interface_name="org.bluez.Adapter1"):
    @sdbus.dbus_property_async(property_signature="b")
    def Powered(self) -> bool:
        raise NotImplementedError


async def serve(adapter: str, key: bytes | None) -> None:
    bus = sdbus.sd_bus_open_system()
    sdbus.set_default_bus(bus)
    manager = sdbus.DbusObjectManagerInterfaceAsync()
    manager.export_to_dbus(APP)
    sos_path, batt_path = f"{APP}/service0", f"{APP}/service1"
    sos = Service(u.SOS_SERVICE, 0x10)
    event = Characteristic(u.SOS_EVENT, sos_path, 0x11, FLAGS_NOTIFY, bytes(8))
    feedback = Characteristic(u.SOS_FEEDBACK, sos_path, 0x13, ["write"])
    batt = Service(u.BATTERY_SERVICE, 0x20)
    level = Characteristic(u.BATTERY_LEVEL, batt_path, 0x21, FLAGS_NOTIFY, bytes([77]))
    for path, obj in (
        (sos_path, sos),
        (f"{sos_path}/char0", event),
        (f"{sos_path}/char1", feedback),
        (batt_path, batt),
        (f"{batt_path}/char0", level),
    ):
        manager.export_with_manager(path, obj)
    adv = Advertisement("bluez-sos")
    adv.export_to_dbus(f"{APP}/adv0")
    path = f"/org/bluez/{adapter}"
    await Adapter.new_proxy("org.bluez", path).Powered.set_async(True)
    await GattManager.new_proxy("org.bluez", path).RegisterApplication(APP, {})
    await AdvertisingManager.new_proxy("org.bluez", path).RegisterAdvertisement(f"{APP}/adv0", {})
    print("READY", flush=True)
    boot, counter = time.monotonic(), 0
    resending: set[asyncio.Task[None]] = set()
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := (await reader.readline()).decode().strip():
        if line == "press":
            counter += 1
            raw = p.encode_sos_event(
                p.SosEvent(p.SosEventType.LONG_PRESS, counter, int((time.monotonic() - boot) * 1000), boot=1),
                key,
            )
            await event.Value.set_async(raw)
            print(f"PRESSED {counter}", flush=True)
            task = asyncio.get_running_loop().create_task(resend(event, feedback, counter, raw))
            resending.add(task)
            task.add_done_callback(resending.discard)


async def resend(event: Characteristic, feedback: Characteristic, counter: int, raw: bytes) -> None:
    """Notify the event again each second until the gateway's feedback answers it."""
    while True:
        await asyncio.sleep(1.0)
        if counter in feedback.answered:
            return
        await event.Value.set_async(raw)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", default="hci1")
    ap.add_argument("--key", help="its event key (32 hex digits); without, version 1 events")
    args = ap.parse_args()
    asyncio.run(serve(args.adapter, bytes.fromhex(args.key) if args.key else None))


if __name__ == "__main__":
    main()
