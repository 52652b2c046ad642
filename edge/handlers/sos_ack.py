"""`sos.ack`: the platform acknowledged an alarm; the wearable shows *acknowledged*.

What the acknowledgement needs (the alarm's wearable and event counter) was committed
with the alarm, keyed by its seq, so an ack after any restart still reaches the button
with the right counter; one that is not connected gets it when it connects (within
an hour, edge/deliveries.py). An ack for an alarm the gateway does not know, or of
another wearable, is refused (`unknown_alarm`), never guessed. An ack for an alarm the
worker has cancelled since is shown as *cancelled*, and the result says `cancelled`: the
control room learns the alarm is off. Either way, the alarm's escalation stops."""

from __future__ import annotations

from typing import Any

from drivers.ble.profiles import Feedback
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
    gw.alarms.acknowledged(seq)
    cancelled = gw.ble is not None and await gw.ble.cancelled_since(device, seq)
    expires = gw.clock_ms() + int(ACK_TTL_S * 1000)
    report: dict[str, Any] = {"ack": cmd.id, "alarm_seq": seq}
    pattern = None
    if cancelled:
        report["cancelled"] = True
        pattern = int(Feedback.CANCELLED)
    d = Delivery(f"ack:{cmd.id}", report, expires, [device], counter=alarm.counter, pattern=pattern)
    got = await gw.deliveries.add(d)
    return {"delivered": got["delivered"], "pending": got["pending"], "cancelled": cancelled}
