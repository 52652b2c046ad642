"""`firmware.update`: a signed manifest for some wearables; the image follows in chunks
(firmware_bridge/bridge.py does the rest)."""

from __future__ import annotations

from typing import Any

from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView
from firmware_bridge.bridge import UpdateRejected

TYPE = "firmware.update"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    if gw.firmware is None:
        raise Rejected(CommandError.UNSUPPORTED, cmd.id)
    try:
        return await gw.firmware.command(cmd.args)
    except UpdateRejected as exc:
        raise Rejected(exc.code, cmd.id, exc.detail) from None
