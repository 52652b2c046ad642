"""Body camera (docs/ble-profiles.md, service 6a1e0200): recording state, clip marks, and
recording started when its wearer raises an alarm."""

from __future__ import annotations

from drivers.ble import profiles as p
from drivers.ble import uuids as u
from drivers.ble.kinds.base import Host, Link, WearableKind


class BodyCamera(WearableKind):
    name = "body_camera"
    service = u.CAMERA_SERVICE
    label = "camera"
    reacts_to_alarm = True

    def __init__(self) -> None:
        self._state: dict[str, p.CameraState] = {}  # device -> the last state reported

    async def start(self, link: Link, host: Host) -> None:
        await link.subscribe(u.CAMERA_STATE, "state")
        await link.subscribe(u.CAMERA_MARK, "mark")
        self._state.pop(link.w.id, None)
        await self.handle(link, host, "state", await link.read(u.CAMERA_STATE))

    async def handle(self, link: Link, host: Host, tag: str, raw: bytes) -> None:
        w = link.w
        if tag == "state":
            status = p.parse_camera_state(raw)
            if not isinstance(status, p.CameraStatus):
                link.reject(status.detail)
                return
            if self._state.get(w.id) != status.state:
                host.submit(
                    "camera.recording",
                    w.id,
                    {
                        "device": w.id,
                        "worker": w.worker,
                        "state": status.state.name.lower(),
                        "recording": status.state == p.CameraState.RECORDING,
                        "storage_pct": status.storage_pct,
                    },
                )
            self._state[w.id] = status.state
            host.battery(link, bytes([status.battery_pct]))
            return
        mark = p.parse_clip_mark(raw)
        if not isinstance(mark, p.ClipMark):
            link.reject(mark.detail)
            return
        data = {
            "device": w.id,
            "worker": w.worker,
            "clip": mark.clip_id,
            "offset_ms": mark.offset_ms,
            "sha256": mark.sha256.hex(),
        }
        host.submit("camera.mark", w.id, data)

    async def alert(self, link: Link, pattern: p.Feedback, counter: int) -> None:
        command = p.encode_camera_control(p.CameraCommand.ALERT, p.CameraReason.PLATFORM)
        await link.write(u.CAMERA_CONTROL, command)

    async def show_alert(self, link: Link, level: p.AlertLevel, text: str) -> bool:
        """The LED/buzzer, and the text where the camera has a screen (Alert Text)."""
        if link.has(u.CAMERA_TEXT):
            await link.write(u.CAMERA_TEXT, p.encode_alert_text(level, text))
        await self.alert(link, p.Feedback.ALERT, 0)
        return True

    async def worker_alarm(self, link: Link) -> bool:
        await link.write(u.CAMERA_CONTROL, p.encode_camera_control(p.CameraCommand.START, p.CameraReason.SOS))
        return True


KIND = BodyCamera
