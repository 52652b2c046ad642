"""`device.unpair`: a wearable removed; the gateway lets go of it and no longer believes it."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView

TYPE = "device.unpair"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    dev = cmd.args.get("id")
    if not isinstance(dev, str) or not await asyncio.to_thread(gw.registry.unpair, dev):
        raise Rejected(CommandError.UNKNOWN_DEVICE, cmd.id)
    if gw.ble is not None:
        gw.ble.refresh()
    return {"device": dev}
