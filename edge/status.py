"""The status document: what `gridedge status` prints, the page shows, `/metrics` reads
and `diag.snapshot` publishes (docs/operations.md, Status). It is the parts' own
snapshots, each under its name; this module knows none of them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edge import __version__

Snapshot = Callable[[], Any]


class Oldest(Protocol):
    async def oldest(self) -> dict[int, int]: ...


def status_document(header: Mapping[str, Any], sections: Mapping[str, Snapshot | None]) -> dict[str, Any]:
    """The header (`gw`, `epoch`) with this build's version and pid, then each section's
    snapshot (null for a part that is not running)."""
    doc: dict[str, Any] = {**header, "version": __version__, "pid": os.getpid()}
    for name, snapshot in sections.items():
        doc[name] = None if snapshot is None else snapshot()
    return doc


async def with_oldest(doc: dict[str, Any], outbox: Oldest | None) -> dict[str, Any]:
    """The document with what must be read from the outbox: each lane's oldest record's age."""
    if outbox is not None and doc.get("outbox") is not None:
        now = time.time_ns() // 1_000_000
        oldest = await outbox.oldest()
        doc["outbox"]["oldest_age_s"] = {p: max(0, now - at) / 1000 for p, at in oldest.items()}
    return doc
