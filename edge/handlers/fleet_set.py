"""`fleet.set`: the platform names a geofence's home fleet, so a recall lists who is
missing (not only who was seen leaving); kept across restarts (edge/harbour.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from edge import harbour
from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView
from floor.config import fleet_problem

TYPE = "fleet.set"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    fence, mmsis = cmd.args.get("geofence"), cmd.args.get("mmsi")
    if (problem := fleet_problem(mmsis)) is not None or not isinstance(mmsis, list):
        raise Rejected(CommandError.BAD_ARGS, cmd.id, f"mmsi: {problem}")
    fleet = sorted(set(mmsis))
    if not isinstance(fence, str) or not gw.tracker.set_fleet(fence, fleet):
        raise Rejected(CommandError.BAD_ARGS, cmd.id, f"geofence {fence!r} is not configured here")
    await asyncio.to_thread(harbour.save, gw.tracker, gw.cfg.gateway.state_dir)
    gw.vessels_outside()
    return {"geofence": fence, "fleet": len(fleet)}
