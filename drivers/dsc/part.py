"""A VHF radio's DSC output (`kind = "dsc"`, IEC 61162-1 `$CDDSC`/`$CDDSE`): distress
alerts, relays and acknowledgements as `dsc.distress`, other calls as `dsc.call`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.part import Device, DeviceHost, StreamPart
from floor.config import DeviceConfig, Section, source


@dataclass(frozen=True, slots=True, kw_only=True)
class DscDevice(DeviceConfig):
    kind: Literal["dsc"] = "dsc"


def parse(sec: Section, dev_id: str) -> DscDevice:
    # A DSC radio is quiet until someone calls: silence is normal, so the timeout is long.
    return DscDevice(id=dev_id, source=source(sec, default_baud=4800, default_silence=3600.0))


def build(cfg: DscDevice, host: DeviceHost) -> Device:
    from drivers.dsc.driver import DscDriver

    return DscDriver(cfg, emit=host.emit, room=host.room, tap=host.tap)


PART = StreamPart(name="dsc", config=DscDevice, parse=parse, build=build)
