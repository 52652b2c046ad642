"""The wearable registry: which devices this gateway may connect to and believe.

Persisted in the state directory (`devices.json`, written atomically) so
`device.pair`/`device.unpair` change it at run time and it survives restarts.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.config import valid_id
from edge.fsutil import write_atomic

log = logging.getLogger(__name__)

WEARABLE_KINDS = ("sos_button", "body_camera")
_MAC = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
_IRK = re.compile(r"[0-9a-f]{32}")


class BadEntry(ValueError):
    """A pairing request that names an impossible device."""


@dataclass(frozen=True, slots=True)
class Wearable:
    id: str
    kind: str
    worker: str
    address: str | None = None  # public or static random address, AA:BB:CC:DD:EE:FF
    irk: str | None = None  # identity resolving key (hex) for resolvable private addresses


def wearable_from(args: Any) -> Wearable:
    """Validate a `device.pair` argument map; ids can never inject into a topic."""
    if not isinstance(args, dict):
        raise BadEntry("args must be a map")
    dev_id, kind, worker = args.get("id"), args.get("kind"), args.get("worker")
    address, irk = args.get("address"), args.get("irk")
    if not isinstance(dev_id, str) or not valid_id(dev_id):
        raise BadEntry("id must match [A-Za-z0-9._-]{1,64}")
    if kind not in WEARABLE_KINDS:
        raise BadEntry(f"kind must be one of {', '.join(WEARABLE_KINDS)}")
    if not isinstance(worker, str) or not valid_id(worker):
        raise BadEntry("worker must match [A-Za-z0-9._-]{1,64}")
    if (address is None) == (irk is None):
        raise BadEntry("give exactly one of address or irk")
    if address is not None and (not isinstance(address, str) or not _MAC.fullmatch(address.upper())):
        raise BadEntry("address must be AA:BB:CC:DD:EE:FF")
    if irk is not None and (not isinstance(irk, str) or not _IRK.fullmatch(irk.lower())):
        raise BadEntry("irk must be 32 hex digits")
    return Wearable(
        id=dev_id,
        kind=str(kind),
        worker=worker,
        address=address.upper() if isinstance(address, str) else None,
        irk=irk.lower() if isinstance(irk, str) else None,
    )


class Registry:
    """Paired wearables, persisted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.devices: dict[str, Wearable] = {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            for entry in raw.get("devices", []):
                w = wearable_from(entry)
                self.devices[w.id] = w
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError) as exc:
            log.error("registry: %s is unreadable (%s); starting with no paired wearables", path, exc)

    def _save(self) -> None:
        doc = {
            "devices": [{k: v for k, v in asdict(w).items() if v is not None} for w in self.devices.values()]
        }
        write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())

    def pair(self, w: Wearable) -> None:
        self.devices[w.id] = w
        self._save()

    def unpair(self, dev_id: str) -> bool:
        if self.devices.pop(dev_id, None) is None:
            return False
        self._save()
        return True
