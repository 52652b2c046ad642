"""What a command handler sees of the running gateway, and the delivery report they share.

A handler is `async def handle(gw: GatewayView, cmd: Command) -> dict`: the extra fields
of its `cmd.result`, or `commands.Rejected(code)`. It runs after the command verified
(signature, target, cseq, expiry) and is answered with exactly one result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from drivers.ble.kinds.base import Delivery
from drivers.ble.profiles import Feedback
from edge.base.config import Config
from edge.base.registry import Registry
from edge.commands import Command

if TYPE_CHECKING:
    from drivers.ais.tracker import VesselTracker
    from drivers.base import StreamDriver
    from drivers.ble.driver import BleManager
    from edge.commands import CommandHandler
    from edge.ingest import Ingest
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
    def drivers(self) -> Mapping[str, StreamDriver]: ...

    @property
    def firmware(self) -> FirmwareBridge | None: ...

    @property
    def commands(self) -> CommandHandler | None: ...

    @property
    def tracker(self) -> VesselTracker: ...

    def snapshot(self) -> dict[str, Any]: ...

    def vessels_outside(self) -> None: ...

    def reload_soon(self, cfg: Config) -> None: ...


Handle = Callable[[GatewayView, Command], Awaitable[dict[str, Any]]]


async def deliver(
    gw: GatewayView, wearable: str, what: dict[str, Any], pattern: Feedback, counter: int = 0
) -> bool:
    """Show a pattern on one wearable and report in `alert.delivery` whether it got there."""
    ble = gw.ble
    got = Delivery.NOT_CONNECTED if ble is None else await ble.deliver(wearable, pattern, counter)
    ok = got == Delivery.DELIVERED
    if gw.ingest is not None:
        rec = {**what, "device": wearable, "ok": ok}
        if not ok:
            rec["error"] = got.value
        gw.ingest.submit("alert.delivery", "gw", rec)
    return ok
