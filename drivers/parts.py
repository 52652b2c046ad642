"""The parts: every stream device kind, bearer and wearable kind, found where it lives.

A stream device kind or a bearer is one module, `drivers/<part>/part.py`, exporting
`PART`: a `StreamPart` or a `BearerPart` (its name, its config dataclass and section
parser, a factory, and what the provisioning sheet may say of it). A wearable kind is a
module of `drivers/ble/kinds`. This registry finds them all; the config is parsed with its
`catalog` (the floor names no part), the gateway builds devices and bearers from it, and
the status, the page, the metrics, provisioning and the schema read names and fields from
what the parts report. Nothing else in the tree lists them.

A part's module imports only what its config needs at import time; its driver is
imported by its factory, so a gateway without that device never loads its libraries.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import drivers
from drivers.ble.kinds import KINDS as WEARABLE_KINDS
from drivers.part import (
    AnyBearerPart,
    AnyStreamPart,
    Bearer,
    BearerHost,
    BearerPart,
    BearerRefused,
    Device,
    DeviceHost,
    StreamPart,
)
from floor.config import BearerConfig, Config, DeviceConfig, PartCatalog, load, parse

__all__ = [
    "PARTS",
    "Bearer",
    "BearerHost",
    "BearerPart",
    "BearerRefused",
    "Device",
    "DeviceHost",
    "Parts",
    "StreamPart",
    "discover",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True, slots=True)
class Parts:
    """Every part the gateway knows, by name."""

    devices: Mapping[str, AnyStreamPart]
    bearers: Mapping[str, AnyBearerPart]
    wearables: Mapping[str, bool] = field(default_factory=dict)  # kind -> its events need a key

    @property
    def catalog(self) -> PartCatalog:
        """What the config needs: the section parsers and the wearable kinds."""
        return PartCatalog(
            devices={n: p.parse for n, p in self.devices.items()},
            bearers={n: p.parse for n, p in self.bearers.items()},
            wearables=self.wearables,
        )

    def device(self, cfg: DeviceConfig) -> AnyStreamPart:
        return self.devices[cfg.kind]

    def bearer(self, cfg: BearerConfig) -> AnyBearerPart:
        return self.bearers[cfg.name]

    def with_parts(self, *extra: AnyStreamPart | AnyBearerPart) -> Parts:
        """These parts and `extra` (a part of a test's own, say)."""
        devices, bearers = dict(self.devices), dict(self.bearers)
        for part in extra:
            if isinstance(part, StreamPart):
                devices[part.name] = part
            else:
                bearers[part.name] = part
        return replace(self, devices=devices, bearers=bearers)


def _part_modules() -> Iterable[Any]:
    for info in pkgutil.iter_modules(drivers.__path__):
        if info.ispkg and importlib.util.find_spec(f"drivers.{info.name}.part") is not None:
            yield importlib.import_module(f"drivers.{info.name}.part")


def discover() -> Parts:
    """The parts of drivers/*/part.py and the wearable kinds of drivers/ble/kinds."""
    found: list[AnyStreamPart | AnyBearerPart] = []
    for module in _part_modules():
        part = module.PART
        found.extend(part if isinstance(part, tuple) else (part,))
    wearables = {name: kind.counted for name, kind in sorted(WEARABLE_KINDS.items())}
    return Parts(devices={}, bearers={}, wearables=wearables).with_parts(*found)


PARTS = discover()


def load_config(path: Path | str, *, check_files: bool = True, parts: Parts = PARTS) -> Config:
    """Read and validate a config file with the parts this gateway has."""
    return load(path, parts=parts.catalog, check_files=check_files)


def parse_config(
    text: str,
    *,
    file: str = "<config>",
    base: Path | None = None,
    check_files: bool = True,
    parts: Parts = PARTS,
) -> Config:
    """Parse and validate config text with the parts this gateway has."""
    return parse(text, parts=parts.catalog, file=file, base=base, check_files=check_files)
