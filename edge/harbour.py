"""A station's harbour state across restarts: the home fleets and who was last inside
each geofence (drivers/ais/tracker.py decides; this keeps it in `state_dir/harbour.json`).

After a power cut during a typhoon the recall list must not start empty: the file is
written (atomically) within a second of any vessel crossing a geofence's edge or a
`fleet.set`, and read back before the first AIS report is heard."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.ais.tracker import VesselTracker
from floor.clock import boottime_ms
from floor.fsutil import write_atomic

log = logging.getLogger(__name__)

FILE = "harbour.json"


def load(tracker: VesselTracker, state_dir: Path) -> None:
    path = state_dir / FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.error("harbour: %s unreadable (%s): the fleet's state starts empty", path, exc)
        return
    n = tracker.restore(doc)
    log.info("harbour: %d vessels' harbour state restored from %s", n, path)


def save(tracker: VesselTracker, state_dir: Path) -> None:
    path = state_dir / FILE
    try:
        write_atomic(path, json.dumps(tracker.harbour()).encode())
    except OSError as exc:
        log.error("harbour: cannot save %s: %s", path, exc.strerror)


async def keep(
    tracker: VesselTracker, state_dir: Path, submit: Callable[[str, dict[str, Any]], object]
) -> None:
    """Publish `vessels.outside` when the set outside a geofence changes, and save the
    harbour state when it changed (each at most once a second)."""
    while True:
        for kind, data in tracker.tick(boottime_ms()):
            submit(kind, data)
        if tracker.harbour_dirty:
            save(tracker, state_dir)
        await asyncio.sleep(1.0)
