"""`sos.ack`: the platform acknowledged an alarm; the wearable shows *acknowledged*."""

from __future__ import annotations

from typing import Any

from drivers.ble.profiles import Feedback
from edge.commands import Command, CommandError, Rejected
from edge.handlers.base import GatewayView, deliver

TYPE = "sos.ack"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    device = cmd.args.get("device")
    if not isinstance(device, str) or device not in gw.registry.devices:
        raise Rejected(CommandError.UNKNOWN_DEVICE, cmd.id)
    seq = cmd.args.get("alarm_seq")
    counter = gw.ble.alarm_counter(seq) if gw.ble is not None else 0
    ok = await deliver(gw, device, {"ack": cmd.id, "alarm_seq": seq}, Feedback.ACKNOWLEDGED, counter)
    return {"delivered": int(ok)}
