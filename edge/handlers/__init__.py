"""The platform's command types: each module here is one (`TYPE` and `handle`). Adding a
command type is adding a module (and its section in docs/envelope-and-topics.md);
`HANDLERS` finds them."""

from __future__ import annotations

import importlib
import pkgutil

from edge.handlers.base import Handle

HANDLERS: dict[str, Handle] = {}
for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        HANDLERS[_module.TYPE] = _module.handle
