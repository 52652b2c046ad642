"""The shipped Grafana dashboard asks only for metrics the gateway exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edge.web.metrics import exposition
from tests.unit.test_i18n import DOC

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"


def full_doc() -> dict[str, Any]:
    """A status document with every part a scrape reads."""
    return {
        **DOC,
        "outbox": {
            **DOC["outbox"],
            "bytes": 0,
            "max_bytes": 1 << 28,
            "refused": 0,
            "committed": 4,
            "published_unsaved": 10,
            "saved_late": 1,
            "lanes": {p: {"rows": 1, "bytes": 9} for p in range(4)},
        },
        "link": {**DOC["link"], "published_by_kind": {"sos.alarm": 1}, "acked_by_kind": {"sos.alarm": 1}},
        "devices": {"mast": {**DOC["devices"]["mast"], "opened": 2}},
        "ble": {
            "wearables": {"sos-w042": {**DOC["ble"]["wearables"]["sos-w042"], "connects": 1, "rejected": 1}}
        },
        "bearers": {"sms": {**DOC["bearers"]["sms"], "units": 2, "errors": {"cms_error": 1}}},
        "commands": {"accepted": 3, "rejected": {"replay": 1}},
        "feeds": {"gpsd": {"clients": 1, "sent": 5, "dropped": 0}, "nmea_udp": None},
    }


def test_every_metric_the_dashboard_uses_is_exposed() -> None:
    doc = full_doc()
    doc["feeds"] = {"gpsd": {"clients": 1, "sent": 5, "dropped": 0}, "nmea_udp": None}
    exposed = {s.name for f in text_string_to_metric_families(exposition(doc).decode()) for s in f.samples}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    used = {
        m
        for p in panels
        for t in p["targets"]
        for m in re.findall(r"(?:gridedge|process)_[a-z_]+", t["expr"])
    }
    assert used and not used - exposed, (
        f"the dashboard asks for what is not exposed: {sorted(used - exposed)}"
    )


def test_a_panel_shows_one_unit_and_counters_are_there_before_their_first_event() -> None:
    """A panel mixing 0/1, dBm and counts reads as nonsense; a counter whose label appears
    only with its first event shows "No data" until a bad day."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    for p in panels:
        names = {m for t in p["targets"] for m in re.findall(r"(?:gridedge|process)_[a-z_]+", t["expr"])}
        units = {n.rsplit("_", 1)[-1] for n in names if n.endswith(("_dbm", "_ratio", "_bytes", "_seconds"))}
        assert len(units) <= 1, (p["title"], names)
    doc = full_doc() | {"commands": {"accepted": 0, "rejected": {}}}
    text = exposition(doc).decode()
    assert 'gridedge_commands_total{outcome="replay"} 0.0' in text
    assert 'gridedge_rejections_total{device="mast",reason="too_long"} 0.0' in text
    assert "process_resident_memory_bytes" in text and "gridedge_device_last_data_timestamp_seconds" in text
