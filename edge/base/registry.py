"""The wearable registry: which devices this gateway may connect to and believe.

Seeded from the config's `[[devices]]` wearables and persisted in the state directory
(`devices.json`, written atomically) so `device.pair`/`device.unpair` change it at
run time and the change survives restarts. A wearable unpaired at run time stays
unpaired even though the config still lists it (`unpaired` in the file), until it is
paired again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge.base.config import WEARABLE_KINDS, WearableConfig, valid_id, wearable_problem
from edge.base.fsutil import write_atomic

log = logging.getLogger(__name__)

Wearable = WearableConfig
__all__ = ["WEARABLE_KINDS", "BadEntry", "Registry", "Wearable", "wearable_from"]


class BadEntry(ValueError):
    """A pairing request that names an impossible device."""


def wearable_from(args: Any) -> Wearable:
    """Validate a `device.pair` argument map; ids can never inject into a topic."""
    if not isinstance(args, dict):
        raise BadEntry("args must be a map")
    dev_id = args.get("id")
    if not isinstance(dev_id, str) or not valid_id(dev_id):
        raise BadEntry("id must match [A-Za-z0-9._-]{1,64}")
    kind, worker, address, irk = args.get("kind"), args.get("worker"), args.get("address"), args.get("irk")
    problem = wearable_problem(kind, worker, address, irk)
    if problem is not None:
        raise BadEntry(f"{problem[0]} {problem[1]}")
    return Wearable(
        id=dev_id,
        kind=str(kind),
        worker=str(worker),
        address=address.upper() if isinstance(address, str) else None,
        irk=irk.lower() if isinstance(irk, str) else None,
    )


class Registry:
    """Paired wearables, persisted."""

    def __init__(self, path: Path, seed: Iterable[Wearable] = ()) -> None:
        self.path = path
        self.devices: dict[str, Wearable] = {}
        self.unpaired: set[str] = set()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            for entry in raw.get("devices", []):
                w = wearable_from(entry)
                self.devices[w.id] = w
            self.unpaired = {str(x) for x in raw.get("unpaired", [])}
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, TypeError) as exc:
            log.error("registry: %s is unreadable (%s); using the config's wearables only", path, exc)
        for w in seed:
            if w.id not in self.unpaired and w.id not in self.devices:
                self.devices[w.id] = w

    def _save(self) -> None:
        doc = {
            "devices": [{k: v for k, v in asdict(w).items() if v is not None} for w in self.devices.values()],
            "unpaired": sorted(self.unpaired),
        }
        write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())

    def pair(self, w: Wearable) -> None:
        self.devices[w.id] = w
        self.unpaired.discard(w.id)
        self._save()

    def unpair(self, dev_id: str) -> bool:
        if self.devices.pop(dev_id, None) is None:
            return False
        self.unpaired.add(dev_id)
        self._save()
        return True
