"""The status document: what `gridedge status` prints and `diag.snapshot` publishes
(docs/operations.md, Status)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.base.clock import boottime_ms

if TYPE_CHECKING:
    from edge.app import Gateway
    from edge.publisher import Publisher


async def full_status(gw: Gateway) -> dict[str, Any]:
    """The status document, with what must be read from the outbox: each lane's oldest."""
    doc = status_document(gw)
    if gw.outbox is not None and doc["outbox"] is not None:
        now = time.time_ns() // 1_000_000
        oldest = await gw.outbox.oldest()
        doc["outbox"]["oldest_age_s"] = {p: max(0, now - at) / 1000 for p, at in oldest.items()}
    return doc


def _link(pub: Publisher) -> dict[str, Any]:
    return {
        "state": pub.state.value,
        "sessions": pub.sessions,
        "published": pub.published,
        "acked": pub.acked,
        "last_error": pub.last_error,
        "failures": pub.failed_attempts,  # connection attempts failed since it was last up
        "life_safety_overtaken_max": pub.ls_overtaken_max,
        # the backlog's pacing (edge/pacing.py): how much of it may be in flight
        # now, how much queueing it sees, and the most of it an alarm found ahead
        "backlog_window": pub.backlog_window.allowed,
        "backlog_queueing_ms": round(pub.backlog_window.queueing_s * 1000, 1),
        "life_safety_backlog_ahead_max": pub.ls_backlog_ahead_max,
        "last_ack_ms": pub.last_ack_ms,
        "published_by_kind": dict(pub.published_by_kind),
        "acked_by_kind": dict(pub.acked_by_kind),
    }


def status_document(gw: Gateway) -> dict[str, Any]:
    ob, pub = gw.outbox, gw.publisher
    return {
        "gw": gw.cfg.gateway.id,
        "version": __version__,
        "pid": os.getpid(),
        "epoch": None if gw.ingest is None else gw.ingest.epoch.counter,
        "clock": {
            "tq": gw.clock.quality,
            "gnss_disagreements": gw.clock.gnss_disagreements,  # GNSS times refused (NTP says otherwise)
            "gnss_disagreement_ms": gw.clock.gnss_disagreement_ms,
        },
        "link": None if pub is None else _link(pub),
        "life_safety": [] if pub is None else pub.recent.snapshot(),
        "gnss": None
        if gw.last_fix is None
        else {**gw.last_fix.record(), "age_ms": boottime_ms() - gw.last_fix.tb},
        "outbox": None
        if ob is None
        else {
            "hw": ob.hw,
            "depth": ob.depth(),
            "lanes": {int(p): {"rows": s.rows, "bytes": s.bytes} for p, s in ob.stats.lanes.items()},
            "committed": ob.stats.committed,
            "commits": ob.stats.commits,
            "bytes": ob.usage,
            "max_bytes": ob.limits.max_bytes,
            "dropped": ob.stats.dropped,
            "refused": ob.stats.refused,
            "health": ob.health()["state"],
            "degraded": ob.degraded or "",
        },
        "devices": {k: d.counters.snapshot() for k, d in gw.drivers.items()},
        "ais": {
            "duplicates": gw.tracker.duplicates,
            "shaped": gw.tracker.shaped,
            "beacons": gw.tracker.beacons.snapshot(),
        },
        "commands": None
        if gw.commands is None
        else {
            "accepted": gw.commands.accepted,
            "rejected": dict(gw.commands.rejected),
            "last_cseq": dict(gw.commands.state.last),
        },
        "wearables": sorted(gw.registry.devices),
        "workers": {k: w.worker for k, w in gw.registry.devices.items()},
        "ble": None if gw.ble is None else gw.ble.snapshot(),
        "firmware": None if gw.firmware is None else gw.firmware.snapshot(),
        "deliveries": gw.deliveries.snapshot(),
        "sms": None if gw.second is None else gw.second.snapshot(),
        "feeds": {
            "gpsd": None if gw.gpsd is None else gw.gpsd.snapshot(),
            "nmea_udp": None if gw.nmea_out is None else gw.nmea_out.snapshot(),
        },
    }
