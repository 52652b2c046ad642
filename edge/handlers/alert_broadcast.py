"""`alert.broadcast`: an alert (a typhoon recall...) on every wearable; with geofences, the
vessels outside the harbour are listed at once."""

from __future__ import annotations

import asyncio
from typing import Any

from drivers.ble.profiles import Feedback
from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView, deliver

TYPE = "alert.broadcast"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    a = cmd.args
    if not isinstance(a.get("id"), str) or not isinstance(a.get("text"), str) or len(a["text"]) > 1000:
        raise Rejected(CommandError.BAD_ARGS, cmd.id)
    if gw.cfg.geofences:
        gw.vessels_outside()
    what = {"alert": a["id"], "level": a.get("level")}
    devices = list(gw.registry.devices)
    results = await asyncio.gather(*(deliver(gw, d, what, Feedback.ALERT) for d in devices))
    return {"wearables": len(devices), "delivered": sum(results)}
