"""The wearable kinds: each module here is one kind (its service, what it subscribes to,
what its notifications become) and exports its class as `KIND`. Adding a kind is adding
a module (and its section in docs/ble-profiles.md); nothing else lists them."""

from __future__ import annotations

import importlib
import pkgutil

from drivers.ble.kinds.base import WearableKind

KINDS: dict[str, type[WearableKind]] = {}
for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        _kind = importlib.import_module(f"{__name__}.{_info.name}").KIND
        KINDS[_kind.name] = _kind

NAMES = tuple(sorted(KINDS))
KEYED = tuple(sorted(name for name, kind in KINDS.items() if kind.counted))  # need an event key
