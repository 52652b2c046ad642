"""`gateway.rebirth`: the retained birth again, and every device's state."""

from __future__ import annotations

from typing import Any

from edge.commands import Command
from edge.handlers.base import GatewayView

TYPE = "gateway.rebirth"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    sent = gw.publisher is not None and await gw.publisher.rebirth()
    if gw.ingest is not None:
        for dev_id, driver in gw.drivers.items():
            gw.ingest.submit("device.state", dev_id, {"state": driver.snapshot()["state"]})
        if gw.ble is not None:
            for dev_id, state in gw.ble.states().items():
                gw.ingest.submit("device.state", dev_id, {"state": state})
    return {"birth": bool(sent)}
