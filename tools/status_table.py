"""`gridedge status` for people: the status document as a few aligned tables, in the
language of the environment (edge/i18n.py). `--json` keeps the document for scripts."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edge.i18n import translator
from floor.errors import N_

LANES = ((0, N_("life-safety")), (1, N_("event")), (2, N_("telemetry")), (3, N_("bulk")))


def width(text: str) -> int:
    """Columns a terminal gives `text` (a CJK character takes two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, cols: int) -> str:
    return text + " " * max(0, cols - width(text))


def grid(rows: Sequence[Sequence[str]]) -> list[str]:
    cols = [max(width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(pad(c, w) for c, w in zip(r, cols, strict=True)).rstrip() for r in rows]


def render(doc: Mapping[str, Any], lang: str, now_ms: int | None = None) -> str:
    _ = translator(lang).gettext
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000

    def ago(ms: int | None) -> str:
        if not ms:
            return _("never")
        s = max(0.0, (now - ms) / 1000)
        return _("{n} s ago").format(n=round(s)) if s < 90 else _("{n} min ago").format(n=round(s / 60))

    out = [
        _("gateway {gw} (gridedge {version}, epoch {epoch}, clock {tq})").format(
            gw=doc["gw"], version=doc["version"], epoch=doc.get("epoch"), tq=doc["clock"]["tq"]
        )
    ]
    if (posture := doc.get("posture") or {}).get("posture") == "emergency":
        out.append(pad(_("Posture"), 14) + _("EMERGENCY: {reason}").format(reason=posture.get("reason", "")))
    out += _link(doc, _, ago) + _outbox(doc, _) + _alarms(doc, _, ago) + _devices(doc, _, ago)
    out += _wearables(doc, _, ago) + _bearers(doc, _)
    return "\n".join(out) + "\n"


Tr = Callable[[str], str]


def _link(doc: Mapping[str, Any], _: Tr, ago: Callable[[int | None], str]) -> list[str]:
    link = doc.get("link")
    if link is None:
        return []
    return [
        pad(_("Uplink"), 14)
        + _("{state} · last acknowledgement {ago} · sessions {n}").format(
            state=_(link["state"]), ago=ago(link.get("last_ack_ms")), n=link["sessions"]
        )
        + (f" · {link['last_error']}" if link["state"] != "up" and link.get("last_error") else "")
    ]


def _outbox(doc: Mapping[str, Any], _: Tr) -> list[str]:
    ob = doc.get("outbox")
    if ob is None:
        return []
    parts = []
    for prio, name in LANES:
        lane = ob["lanes"].get(prio) or ob["lanes"].get(str(prio)) or {"rows": 0}
        oldest = (ob.get("oldest_age_s") or {}).get(prio)
        extra = (
            "" if not lane["rows"] or oldest is None else " " + _("(oldest {n} s)").format(n=round(oldest))
        )
        parts.append(f"{_(name)} {lane['rows']}{extra}")
    parts.append(_("dropped {n}").format(n=ob["dropped"]))
    return [pad(_("Outbox"), 14) + " · ".join(parts)]


def _alarms(doc: Mapping[str, Any], _: Tr, ago: Callable[[int | None], str]) -> list[str]:
    items = doc.get("life_safety") or []
    if not items:
        return []
    rows = [[_("SEQ"), _("KIND"), _("WHO"), _("STATE"), _("WHEN")]]
    for a in items[:10]:
        who = str(a.get("worker") or a.get("mmsi") or a.get("src") or "")
        state = _(a["state"]) + "".join(
            " + " + _("by {bearer}").format(bearer=b) for b in a.get("bearers", ())
        )
        kind = a["kind"] + (f" ×{a['messages']}" if a.get("messages", 1) > 1 else "")  # an incident's repeats
        rows.append([str(a["seq"]), kind, who, state, ago(a.get("at"))])
    return [_("Life-safety messages"), *grid(rows)]


def _devices(doc: Mapping[str, Any], _: Tr, ago: Callable[[int | None], str]) -> list[str]:
    devices = doc.get("devices") or {}
    if not devices:
        return []
    rows = [[_("ID"), _("STATE"), _("DETAILS")]]
    for dev, c in sorted(devices.items()):
        details = [
            _("last data {ago}").format(ago=ago(c.get("last_ms"))),
            _("events {n}").format(n=c["events"]),
        ]
        if (fix := c.get("fix")) is not None:  # a receiver's own fix, whatever it is called
            details.insert(0, _("fix {d}D, {n} satellites").format(d=fix["fix"], n=fix.get("sats", "?")))
        if rejected := sum(c["rejected"].values()):
            details.append(_("rejected {n}").format(n=rejected))
        if c["state"] != "connected" and c.get("last_error"):  # why, while it is down
            details.append(str(c["last_error"]))
        rows.append([dev, _(c["state"]), " · ".join(details)])
    return [_("Devices"), *grid(rows)]


def _wearables(doc: Mapping[str, Any], _: Tr, ago: Callable[[int | None], str]) -> list[str]:
    ws = (doc.get("ble") or {}).get("wearables") or {}
    if not ws:
        return []
    workers = doc.get("workers") or {}
    rows = [[_("ID"), _("WORKER"), _("STATE"), _("BATTERY"), _("SIGNAL"), _("LAST EVENT")]]
    for dev, w in sorted(ws.items()):
        battery = "" if w.get("battery") is None else f"{w['battery']}%"
        rssi = "" if w.get("rssi") is None else f"{w['rssi']} dBm"
        last = f"{w['last_event']} {ago(w['last_event_ms'])}" if w.get("last_event") else ""
        rows.append([dev, str(workers.get(dev, "")), _(w["state"]), battery, rssi, last])
    return [_("Wearables"), *grid(rows)]


def _bearers(doc: Mapping[str, Any], _: Tr) -> list[str]:
    out = []
    for name, b in (doc.get("bearers") or {}).items():
        signal = "" if b.get("rssi_dbm") is None else f" · {b['rssi_dbm']} dBm"
        cause = f" ({_(b['cause'])})" if b.get("cause") else ""
        out.append(
            pad(_("Bearer {name}").format(name=name), 14)
            + _(b["state"])
            + cause
            + signal
            + " · "
            + _("sent {n}, capped {c}").format(n=b["sent"], c=b["capped"])
        )
    return out
