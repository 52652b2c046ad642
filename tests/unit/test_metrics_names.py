"""The shipped Grafana dashboard asks only for metrics the gateway exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge.web.metrics import exposition
from tests.unit.test_i18n import DOC

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"


def test_every_metric_the_dashboard_uses_is_exposed() -> None:
    doc = {
        **DOC,
        "outbox": {
            **DOC["outbox"],
            "bytes": 0,
            "max_bytes": 1 << 28,
            "refused": 0,
            "lanes": {p: {"rows": 1, "bytes": 9} for p in range(4)},
        },
        "link": {**DOC["link"], "published_by_kind": {"sos.alarm": 1}, "acked_by_kind": {"sos.alarm": 1}},
        "devices": {"mast": {**DOC["devices"]["mast"], "opened": 2}},
        "ble": {
            "wearables": {"sos-w042": {**DOC["ble"]["wearables"]["sos-w042"], "connects": 1, "rejected": 1}}
        },
        "bearers": {"sms": {**DOC["bearers"]["sms"], "units": 2, "errors": {"cms_error": 1}}},
        "commands": {"accepted": 3, "rejected": {"replay": 1}},
    }
    exposed = {s.name for f in text_string_to_metric_families(exposition(doc).decode()) for s in f.samples}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    used = {m for p in panels for t in p["targets"] for m in re.findall(r"gridedge_[a-z_]+", t["expr"])}
    assert used and not used - exposed, (
        f"the dashboard asks for what is not exposed: {sorted(used - exposed)}"
    )
