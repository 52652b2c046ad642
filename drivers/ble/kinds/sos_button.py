"""SOS button (docs/ble-profiles.md, service 6a1e0100): a long press is the alarm.

Every event is counted (`Host.counted_event`): committed with its counter before the
button is told "received", a repeat answered again, never a second alarm. An alarm
makes the wearer's camera record.
"""

from __future__ import annotations

from typing import Any

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.kinds.base import Host, Link, WearableKind, refuse

EVENTS = {
    p.SosEventType.LONG_PRESS: ("sos.alarm", p.Feedback.RECEIVED),
    p.SosEventType.TRIPLE_PRESS: ("sos.cancel", p.Feedback.CANCELLED),
    p.SosEventType.PRESS: ("device.state", p.Feedback.RECEIVED),
    p.SosEventType.TEST: ("device.state", p.Feedback.RECEIVED),
}


class SosButton(WearableKind):
    name = "sos_button"
    counted = True
    alarms = frozenset({"sos.alarm"})
    service = u.SOS_SERVICE
    label = "sos"

    async def start(self, link: Link, host: Host) -> None:
        await link.subscribe(u.SOS_EVENT, "sos")

    async def handle(self, link: Link, host: Host, tag: str, raw: bytes) -> None:
        ev = p.parse_sos_event(raw, link.w.event_key)
        if not isinstance(ev, p.SosEvent):
            refuse(link, ev)
            return
        kind, answer = EVENTS[ev.type]
        data: dict[str, Any] = {"device": link.w.id, "worker": link.w.worker}
        if kind == "device.state":
            data |= {"state": "connected", "event": ev.type.name.lower()}
        elif (fix := host.last_fix()) is not None:
            data["fix"] = dict(fix)
        seq = await host.counted_event(link, ev, kind=kind, data=data, answer=answer, feedback=u.SOS_FEEDBACK)
        if seq is not None and kind in self.alarms:
            host.worker_alarm(link.w.worker)

    async def alert(self, link: Link, pattern: p.Feedback, counter: int) -> None:
        await link.write(u.SOS_FEEDBACK, p.encode_feedback(pattern, counter))

    async def show_alert(self, link: Link, level: p.AlertLevel, text: str) -> bool:
        await link.write(u.SOS_FEEDBACK, p.encode_alert_feedback(level))
        return True


KIND = SosButton
