"""A GNSS receiver (`kind = "gnss"`): NMEA 0183 on a serial port, or gpsd's JSON over
`tcp://host:2947`. Its fixes become `gnss.fix`, set the gateway's clock and go with alarms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.part import Device, DeviceHost, StreamPart
from floor.config import DeviceConfig, Section, source


@dataclass(frozen=True, slots=True, kw_only=True)
class GnssDevice(DeviceConfig):
    kind: Literal["gnss"] = "gnss"
    min_interval_s: float = 1.0
    min_distance_m: float = 0.0
    min_course_change_deg: float = 0.0
    clock_source: bool = True


def parse(sec: Section, dev_id: str) -> GnssDevice:
    return GnssDevice(
        id=dev_id,
        source=source(sec, default_baud=9600, default_silence=10.0),
        min_interval_s=sec.number("min_interval_s", 1.0, lo=0.0),
        min_distance_m=sec.number("min_distance_m", 0.0, lo=0.0),
        min_course_change_deg=sec.number("min_course_change_deg", 0.0, lo=0.0),
        clock_source=sec.flag("clock_source", True),
    )


def build(cfg: GnssDevice, host: DeviceHost) -> Device:
    from drivers.gnss.driver import GnssDriver

    return GnssDriver(
        cfg,
        emit=host.emit,
        clock=host.clock,
        on_time=host.on_time,
        on_fix=host.on_fix,
        room=host.room,
        tap=host.tap,
    )


PART = StreamPart(name="gnss", config=GnssDevice, parse=parse, build=build, gpsd=True)
