"""The BLE transport seam: the drivers speak bleak's API, and the config picks what is under it.

`[ble] backend = "bleak"` (the default) is bleak's own platform backend (BlueZ over
D-Bus on a Pi). `backend = "sim"` is the simulated radio (drivers/ble/sim/backend.py):
a factory that returns a `BleBackend` carrying bleak backend classes of its own
(bleak's `BleakScanner(backend=...)` / `BleakClient(backend=...)` hooks), which is how
the gateway process runs against simulated peripherals: the drivers still go through
`BleakScanner` and `BleakClient`, only the radio is different. The set is closed: a
config never names code to import (a signed config bundle could otherwise run any).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from floor.errors import N_, ONE_OF, ConfigError

if TYPE_CHECKING:  # bleak loads when a radio is made (the first wearable), not at start
    from bleak import BleakClient, BleakScanner
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class BleBackend:
    """What the drivers need from a radio: how to make a scanner and a client."""

    name: str
    scanner: type[BaseBleakScanner] | None = None  # None: bleak's platform backend
    client: type[BaseBleakClient] | None = None
    adapter: str | None = None  # BlueZ adapter (hci0) for bleak's own backend
    aclose: Callable[[], Awaitable[None]] = _nothing
    alive: Callable[[], bool] = lambda: True  # False once the radio is gone for good: reopen it

    def make_scanner(self, callback: AdvertisementDataCallback) -> BleakScanner:
        from bleak import BleakScanner

        bluez: Any = {"adapter": self.adapter} if self.adapter else {}
        return BleakScanner(detection_callback=callback, backend=self.scanner, bluez=bluez)

    def make_client(
        self, device: BLEDevice, on_disconnect: Callable[[BleakClient], None], timeout: float
    ) -> BleakClient:
        from bleak import BleakClient

        return BleakClient(device, disconnected_callback=on_disconnect, timeout=timeout, backend=self.client)


Factory = Callable[[Mapping[str, str]], Awaitable[BleBackend]]


async def _bleak(options: Mapping[str, str]) -> BleBackend:
    return BleBackend("bleak", adapter=options.get("adapter"))


BACKENDS = ("bleak", "sim")  # a closed set: no config names code to import


def resolve_factory(spec: str, options: Mapping[str, str]) -> Factory:
    """`bleak` (BlueZ) or `sim` (the simulated radio, drivers/ble/sim) to its factory;
    ConfigError names what is wrong.

    Starting the backend (which may fail for a while: no adapter yet, simulator not
    up) is the caller's job, with retries."""
    allowed = {"bleak": {"adapter"}, "sim": {"hci", "address"}}.get(spec)
    if allowed is None:
        raise ConfigError("ble.backend", ONE_OF, choices=", ".join(BACKENDS), got=repr(spec))
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(
            "ble.options",
            N_("the {backend} backend takes only {allowed}, not {unknown}"),
            backend=spec,
            allowed=sorted(allowed),
            unknown=sorted(unknown),
        )
    if spec == "bleak":
        return _bleak
    try:
        from drivers.ble.sim.backend import factory  # bumble: installed with the demo and the tests
    except ImportError as exc:
        raise ConfigError("ble.backend", N_("the simulated radio needs bumble: {why}"), why=exc) from None
    return factory
