"""The wearable registry: which devices this gateway may connect to and believe.

The config's `[[devices]]` wearables, with `device.pair`/`device.unpair` layered on top
and persisted in the state directory (`devices.json`, written atomically), so a
change survives restarts. A wearable unpaired at run time stays unpaired even though
the config still lists it (`unpaired` in the file), until it is paired again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from floor.config import WearableConfig, valid_id, wearable_problem
from floor.fsutil import write_atomic

log = logging.getLogger(__name__)

Wearable = WearableConfig
__all__ = ["BadEntry", "Registry", "Wearable", "wearable_from"]


class BadEntry(ValueError):
    """A pairing request that names an impossible device."""


def wearable_from(args: Any, kinds: Mapping[str, bool]) -> Wearable:
    """Validate a `device.pair` argument map (`kinds`: the wearable kinds, True for those
    whose events need a key); ids can never inject into a topic."""
    if not isinstance(args, dict):
        raise BadEntry("args must be a map")
    dev_id = args.get("id")
    if not isinstance(dev_id, str) or not valid_id(dev_id):
        raise BadEntry("id must match [A-Za-z0-9._-]{1,64}")
    kind, worker, address, irk = args.get("kind"), args.get("worker"), args.get("address"), args.get("irk")
    key, insecure = args.get("key"), args.get("insecure", False)
    problem = wearable_problem(kind, worker, address, irk, kinds=kinds, key=key, insecure=insecure)
    if problem is not None:
        raise BadEntry(f"{problem[0]} {problem[1]}")
    return Wearable(
        id=dev_id,
        kind=str(kind),
        worker=str(worker),
        address=address.upper() if isinstance(address, str) else None,
        irk=irk.lower() if isinstance(irk, str) else None,
        key=key.lower() if isinstance(key, str) else None,
        insecure=bool(insecure),
    )


class Registry:
    """Paired wearables: the config's, with the run-time pairings and unpairings on top.

    The config stays the technician's truth for what it lists (an edit to it takes
    effect; its fw_class and smp_port, which a `device.pair` does not carry, are kept);
    `devices.json` holds only what changed at run time: `paired` (on top of, or beside,
    the config's) and `unpaired`."""

    def __init__(self, path: Path, kinds: Mapping[str, bool], seed: Iterable[Wearable] = ()) -> None:
        self.path = path
        self.kinds = kinds  # the wearable kinds a pairing may name
        self.config = {w.id: w for w in seed}
        self.paired: dict[str, Wearable] = {}
        self.unpaired: set[str] = set()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            # "devices" is this file before the split: what it held beyond the config was paired
            for entry in raw.get("paired", raw.get("devices", [])):
                try:
                    w = wearable_from(entry, kinds)
                except BadEntry as exc:
                    # one entry (say, paired before event keys were required) costs only itself
                    name = entry.get("id") if isinstance(entry, dict) else entry
                    log.error("registry: %s: pairing of %r dropped: %s; pair it again", path, name, exc)
                    continue
                if "paired" in raw or w.id not in self.config:
                    self.paired[w.id] = w
            self.unpaired = {str(x) for x in raw.get("unpaired", [])}
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, TypeError) as exc:
            log.error("registry: %s is unreadable (%s); using the config's wearables only", path, exc)
        self.devices: dict[str, Wearable] = {}
        self._layer()

    def _layer(self) -> None:
        devices = {k: w for k, w in self.config.items() if k not in self.unpaired}
        for dev_id, pair in self.paired.items():
            listed = self.config.get(dev_id)
            # what the pairing cannot say (fw_class, smp_port), the config still does
            devices[dev_id] = (
                pair if listed is None else replace(pair, fw_class=listed.fw_class, smp_port=listed.smp_port)
            )
        self.devices = devices

    def _save(self) -> None:
        doc = {
            # keys included: the file is the gateway's own (state_dir is 0700, the file 0600)
            "paired": [
                {k: v for k, v in asdict(w).items() if v is not None and v is not False}
                for w in self.paired.values()
            ],
            "unpaired": sorted(self.unpaired),
        }
        write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())

    def pair(self, w: Wearable) -> None:
        self.paired[w.id] = w
        self.unpaired.discard(w.id)
        self._layer()
        self._save()

    def unpair(self, dev_id: str) -> bool:
        if dev_id not in self.devices:
            return False
        self.paired.pop(dev_id, None)
        self.unpaired.add(dev_id)
        self._layer()
        self._save()
        return True
