"""`alert.broadcast`: an alert (a typhoon recall...) on every addressed wearable, until it
expires (edge/deliveries.py); with geofences, the vessels outside are listed at once."""

from __future__ import annotations

from typing import Any

from edge.commands import Command, CommandError, Rejected
from edge.deliveries import ALERT_TTL_S, Delivery, alert_level
from edge.handlers.base import GatewayView
from floor.config import valid_id

TYPE = "alert.broadcast"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    a = cmd.args
    if not isinstance(a.get("id"), str) or not valid_id(a["id"]):
        raise Rejected(CommandError.BAD_ARGS, cmd.id, "id must match [A-Za-z0-9._-]{1,64}")
    if not isinstance(a.get("text"), str) or len(a["text"]) > 1000:
        raise Rejected(CommandError.BAD_ARGS, cmd.id, "text must be a string of at most 1000 characters")
    level = alert_level(a.get("level"))
    if level is None:
        raise Rejected(CommandError.BAD_ARGS, cmd.id, "level must be text (info, warning, emergency...)")
    expires = a.get("expires")
    now_ms = gw.clock_ms()
    if not expires:  # absent, null or 0: the default lifetime
        expires = now_ms + int(ALERT_TTL_S * 1000)
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise Rejected(CommandError.BAD_ARGS, cmd.id, "expires must be unix ms")
    devices = a.get("devices", list(gw.registry.devices))
    if not isinstance(devices, list) or any(d not in gw.registry.devices for d in devices):
        raise Rejected(CommandError.UNKNOWN_DEVICE, cmd.id, "devices must list paired wearables")
    if gw.cfg.geofences:
        gw.vessels_outside()
    if expires <= now_ms:
        raise Rejected(CommandError.EXPIRED, cmd.id, "the alert's expires has passed")
    report = {"alert": a["id"], "level": a.get("level") or level.name.lower()}
    d = Delivery(f"alert:{a['id']}", report, expires, sorted(set(devices)), level=int(level), text=a["text"])
    return await gw.deliveries.add(d)
