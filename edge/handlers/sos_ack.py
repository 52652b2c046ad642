"""`sos.ack`: the platform acknowledged an alarm; the wearable shows *acknowledged*.

What the acknowledgement needs (the alarm's wearable and event counter) was committed
with the alarm, keyed by its seq, so an ack after any restart still reaches the button
with the right counter; one that is not connected gets it when it connects (within
an hour, edge/deliveries.py). An ack for an alarm the gateway does not know, or of
another wearable, is refused (`unknown_alarm`), never guessed."""

from __future__ import annotations

from typing import Any

from edge.commands import Command, CommandError, Rejected
from edge.deliveries import ACK_TTL_S, Delivery
from edge.handlers.base import GatewayView

TYPE = "sos.ack"


async def handle(gw: GatewayView, cmd: Command) -> dict[str, Any]:
    device = cmd.args.get("device")
    if not isinstance(device, str) or device not in gw.registry.devices:
        raise Rejected(CommandError.UNKNOWN_DEVICE, cmd.id)
    seq = cmd.args.get("alarm_seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
        raise Rejected(CommandError.BAD_ARGS, cmd.id, "alarm_seq must be a positive integer")
    alarm = None if gw.ble is None else await gw.ble.alarm(seq)
    if alarm is None or alarm.device != device:
        raise Rejected(CommandError.UNKNOWN_ALARM, cmd.id, f"no alarm of {device} at seq {seq} is known here")
    expires = gw.clock_ms() + int(ACK_TTL_S * 1000)
    report = {"ack": cmd.id, "alarm_seq": seq}
    d = Delivery(f"ack:{cmd.id}", report, expires, [device], counter=alarm.counter)
    got = await gw.deliveries.add(d)
    return {"delivered": got["delivered"], "pending": got["pending"]}
