"""`posture.set`: everyday or emergency posture (edge/posture.py), for this gateway or a
group of gateways by its group topic; an emergency holds until its expiry."""

from __future__ import annotations

from typing import Any

from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView
from edge.posture import PostureRefused

TYPE = "posture.set"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    try:
        return await gw.posture.set(cmd.args, cmd.id)
    except PostureRefused as exc:
        raise Rejected(CommandError.BAD_ARGS, cmd.id, str(exc)) from None
