"""The BLE transport seam: the drivers speak bleak's API, and the config picks what is under it.

`[ble] backend = "bleak"` (the default) is bleak's own platform backend (BlueZ over
D-Bus on a Pi). `backend = "package.module:factory"` names an async factory that
returns a `BleBackend` carrying bleak backend classes of its own (bleak's
`BleakScanner(backend=...)` / `BleakClient(backend=...)` hooks), which is how the
gateway process runs against simulated peripherals: the drivers still go through
`BleakScanner` and `BleakClient`, only the radio is different.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner

from edge.base.errors import ConfigError


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
        bluez: Any = {"adapter": self.adapter} if self.adapter else {}
        return BleakScanner(detection_callback=callback, backend=self.scanner, bluez=bluez)

    def make_client(
        self, device: BLEDevice, on_disconnect: Callable[[BleakClient], None], timeout: float
    ) -> BleakClient:
        return BleakClient(device, disconnected_callback=on_disconnect, timeout=timeout, backend=self.client)


Factory = Callable[[Mapping[str, str]], Awaitable[BleBackend]]


async def _bleak(options: Mapping[str, str]) -> BleBackend:
    return BleBackend("bleak", adapter=options.get("adapter"))


def resolve_factory(spec: str, options: Mapping[str, str]) -> Factory:
    """`bleak` or `package.module:factory` to the factory; ConfigError names what is wrong.

    Starting the backend (which may fail for a while: no adapter yet, simulator not
    up) is the caller's job, with retries."""
    if spec == "bleak":
        unknown = set(options) - {"adapter"}
        if unknown:
            raise ConfigError("ble.options", f"bleak's backend takes only 'adapter', not {sorted(unknown)}")
        return _bleak
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError("ble.backend", f"expected 'bleak' or 'package.module:factory', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("ble.backend", f"cannot load {spec!r}: {exc}") from None
    if not callable(factory):
        raise ConfigError("ble.backend", f"{spec!r} is not callable")
    return factory  # type: ignore[no-any-return]
