"""What a command handler sees of the running gateway.

A handler is `async def handle(gw: GatewayView, cmd: Command) -> dict`: the extra fields
of its `cmd.result`, or `commands.Rejected(code)`. It runs after the command verified
(signature, target, cseq, expiry) and is answered with exactly one result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from drivers.parts import Device
from edge.commands import Command
from floor.config import Config
from floor.registry import Registry

if TYPE_CHECKING:
    from drivers.ais.tracker import VesselTracker
    from drivers.ble.driver import BleManager
    from edge.alarms import AlarmPath
    from edge.commands import CommandHandler
    from edge.deliveries import Deliveries
    from edge.ingest import Ingest
    from edge.posture import Posture
    from edge.publisher import Publisher
    from firmware_bridge.bridge import FirmwareBridge


class GatewayView(Protocol):
    """The parts of the running gateway (edge/app.py's Gateway) a handler may use."""

    @property
    def cfg(self) -> Config: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def ble(self) -> BleManager | None: ...

    @property
    def ingest(self) -> Ingest | None: ...

    @property
    def publisher(self) -> Publisher | None: ...

    @property
    def drivers(self) -> Mapping[str, Device]: ...

    @property
    def firmware(self) -> FirmwareBridge | None: ...

    @property
    def commands(self) -> CommandHandler | None: ...

    @property
    def tracker(self) -> VesselTracker: ...

    @property
    def deliveries(self) -> Deliveries: ...

    @property
    def alarms(self) -> AlarmPath: ...

    @property
    def posture(self) -> Posture: ...

    def clock_ms(self) -> int:
        """Unix ms by the gateway's clock (expiries are judged by it)."""

    def snapshot(self) -> dict[str, Any]: ...

    def vessels_outside(self) -> None: ...

    def reload_soon(self, cfg: Config) -> None: ...


Handle = Callable[[GatewayView, Command], Awaitable[dict[str, Any]]]
