"""`device.pair`: a wearable added to the registry at run time."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView
from floor.registry import BadEntry, wearable_from

TYPE = "device.pair"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    try:
        w = wearable_from(cmd.args, gw.registry.kinds)
    except BadEntry as exc:
        raise Rejected(CommandError.BAD_ARGS, cmd.id, str(exc)) from None
    await asyncio.to_thread(gw.registry.pair, w)
    if gw.ble is not None:
        gw.ble.refresh()
    return {"device": w.id}
