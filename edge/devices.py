"""The stream devices of a gateway, built from their parts (drivers/parts.py), and what
the gateway lends them (`DeviceHost`): the ingest, backpressure, the clock, the station's
vessel tracker and the local tools' taps. Each runs under its own supervisor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.parts import Device, Parts
from floor.clock import Clock
from floor.config import DeviceConfig
from floor.supervisor import Backoff, supervise

if TYPE_CHECKING:
    from drivers.ais.parse import AisReport
    from drivers.ais.tracker import VesselTracker
    from drivers.base import Emit
    from drivers.gnss.parse import Fix


class Devices(Mapping[str, Device]):
    """The built devices by id; a `DeviceHost` to each of them."""

    def __init__(
        self,
        configs: tuple[DeviceConfig, ...],
        parts: Parts,
        *,
        emit: Emit,
        room: Callable[[], Awaitable[None]],
        clock: Clock,
        tracker: VesselTracker,
        state_dir: Path,
        on_time: Callable[[int, int], None],
        on_fix: Callable[[str, Fix], None],
        on_ais: Callable[[str, AisReport], None] | None = None,
        tap: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.emit = emit
        self._room = room
        self.clock = clock
        self.tracker = tracker
        self.state_dir = state_dir
        self._on_time = on_time
        self._on_fix = on_fix
        self._on_ais = on_ais
        self.tap = tap
        self._parts = parts
        self._built: dict[str, tuple[Device, tuple[float, float]]] = {}
        for cfg in configs:
            part = parts.device(cfg)
            self._built[cfg.id] = (part.build(cfg, self), part.backoff)

    # DeviceHost ---------------------------------------------------------------------

    async def room(self) -> None:
        await self._room()

    def on_time(self, utc_ms: int, tb: int) -> None:
        self._on_time(utc_ms, tb)

    def on_fix(self, dev: str, fix: Fix) -> None:
        self._on_fix(dev, fix)

    def on_ais(self, dev: str, report: AisReport) -> None:
        if self._on_ais is not None:
            self._on_ais(dev, report)

    # the gateway's view ---------------------------------------------------------------

    def __getitem__(self, dev_id: str) -> Device:
        return self._built[dev_id][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built)

    def __len__(self) -> int:
        return len(self._built)

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Each device under a supervisor of its own, in the gateway's task group."""
        for device, (first, longest) in self._built.values():
            tg.create_task(
                # a device that stays away (unplugged for days) is logged once, then counted
                supervise(device.name, device.run, Backoff(first, longest), quiet_repeats=True),
                name=f"{device.name}.supervise",
            )

    def snapshot(self) -> dict[str, Any]:
        return {dev_id: device.snapshot() for dev_id, (device, _b) in self._built.items()}


def raw_view(drivers: Callable[[], Mapping[str, Device]], dev_id: str) -> list[dict[str, Any]] | None:
    """A stream device's last lines as sent (the page's raw view); None: no such device."""
    device = drivers().get(dev_id)
    return None if device is None else device.raw.view()
