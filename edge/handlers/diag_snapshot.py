"""`diag.snapshot`: the status document, published."""

from __future__ import annotations

from typing import Any

from edge.commands import Command
from edge.handlers.base import GatewayView

TYPE = "diag.snapshot"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    if gw.ingest is not None:
        gw.ingest.submit("diag.snapshot", "gw", gw.snapshot())
    return {}
