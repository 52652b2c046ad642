"""An AIS receiver or transponder (`kind = "ais"`): serial, a TCP client or a UDP
listener. Every receiver of a station feeds the one `VesselTracker`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.part import Device, DeviceHost, StreamPart
from floor.config import DeviceConfig, Section, source


@dataclass(frozen=True, slots=True, kw_only=True)
class AisDevice(DeviceConfig):
    kind: Literal["ais"] = "ais"


def parse(sec: Section, dev_id: str) -> AisDevice:
    return AisDevice(id=dev_id, source=source(sec, default_baud=38400, default_silence=120.0))


def build(cfg: AisDevice, host: DeviceHost) -> Device:
    from drivers.ais.driver import AisDriver

    return AisDriver(
        cfg, emit=host.emit, tracker=host.tracker, room=host.room, tap=host.tap, on_report=host.on_ais
    )


PART = StreamPart(name="ais", config=AisDevice, parse=parse, build=build, gpsd=True)
