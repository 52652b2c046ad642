"""An alarm as a person reads it on a phone: what happened, to whom, where (with a map
link), when (the gateway's local time) and which gateway says so. Beside the compact
signed form the platform checks, this is what a duty officer's SMS shows.

English or Simplified Chinese (the catalogs of edge/i18n.py); plain text, short, so it
fits one SMS where it can (70 characters in UCS-2, 160 in the GSM alphabet).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.i18n import translator
from floor.errors import N_

WHAT = {
    ("sos.alarm", None): N_("SOS"),
    ("sos.cancel", None): N_("SOS cancelled"),
    ("worker.down", "fall"): N_("FALL"),
    ("worker.down", "no_motion"): N_("NO MOTION"),
    ("worker.down", "ok"): N_("worker OK (alarm cancelled)"),
    ("worker.overdue", "overdue"): N_("TAG SILENT"),
    ("worker.overdue", "resolved"): N_("tag heard again"),
    ("ais.distress", None): N_("AIS DISTRESS"),
    ("dsc.distress", None): N_("DSC DISTRESS"),
    ("beidou.distress", None): N_("BEIDOU DISTRESS"),
}
BEACONS = {"sart": N_("SART"), "mob": N_("man overboard beacon"), "epirb": N_("EPIRB")}
NATURES = {
    "fire": N_("fire"),
    "flooding": N_("flooding"),
    "collision": N_("collision"),
    "grounding": N_("grounding"),
    "listing": N_("listing"),
    "sinking": N_("sinking"),
    "adrift": N_("adrift"),
    "undesignated": N_("undesignated"),
    "abandoning": N_("abandoning ship"),
    "piracy": N_("piracy"),
    "mob": N_("man overboard"),
    "epirb": N_("EPIRB"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Style:
    """How readable alarms are written on this gateway."""

    lang: str = "zh_CN"
    timezone: str = ""  # an IANA zone (Asia/Shanghai); empty: the system's
    map_link: str = "https://uri.amap.com/marker?position={lon},{lat}"  # empty: no link
    names: Mapping[str, str] = field(default_factory=dict)  # worker id -> name

    def zone(self) -> dt.tzinfo | None:
        if not self.timezone:
            return None
        try:
            return zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return None


def readable(payload: Mapping[str, Any], gw: str, style: Style, *, prefix: str = "") -> str:
    """One alarm (an envelope's payload) as a line of text; `prefix` is said first (the
    escalation's "nobody has answered")."""
    _ = translator(style.lang).gettext
    recs = payload.get("recs") or [{}]
    rec: Mapping[str, Any] = recs[0] if isinstance(recs[0], Mapping) else {}
    got = rec.get("d")
    d: Mapping[str, Any] = got if isinstance(got, Mapping) else {}
    kind = str(payload.get("kind", ""))
    parts = [_(prefix)] if prefix else []
    parts.append(_what(kind, d, _))
    if who := _who(kind, d, style, _):
        parts.append(who)
    if where := _where(d, style):
        parts.append(where)
    parts.append(_when(rec.get("tu"), style))
    parts.append(_("gateway {gw}").format(gw=gw))
    return " ".join(p for p in parts if p)


def _what(kind: str, d: Mapping[str, Any], _: Any) -> str:
    event = d.get("event") if kind == "worker.down" else d.get("state") if kind == "worker.overdue" else None
    what = WHAT.get((kind, event)) or WHAT.get((kind, None)) or kind
    text: str = "[" + _(what) + "]"
    if kind == "ais.distress" and (device := BEACONS.get(str(d.get("device")))):
        text += " " + _(device)
    if kind == "dsc.distress":
        nature = NATURES.get(str(d.get("nature")))
        if nature is not None:
            text += " " + _(nature)
        if d.get("call") in ("relay", "ack"):
            text += " (" + _("relayed") + ")" if d.get("call") == "relay" else " (" + _("acknowledged") + ")"
    if kind == "beidou.distress" and isinstance(said := d.get("text"), str) and said:
        text += f" “{said[:60]}”"
    if d.get("cancel") and kind != "worker.down":
        text += " " + _("cancelled")
    return text


def _who(kind: str, d: Mapping[str, Any], style: Style, _: Any) -> str:
    worker = d.get("worker")
    if isinstance(worker, str) and worker:
        name = style.names.get(worker)
        text: str = _("worker {worker}").format(worker=worker)
        return text + (f" ({name})" if name else "")
    if (mmsi := d.get("mmsi")) is not None:
        return f"MMSI {mmsi}"
    if (card := d.get("card")) is not None:
        who: str = _("BeiDou card {card}").format(card=card)
        return who
    return ""


def _where(d: Mapping[str, Any], style: Style) -> str:
    lat, lon = d.get("lat"), d.get("lon")
    fix = d.get("fix")
    if (lat is None or lon is None) and isinstance(fix, Mapping):
        lat, lon = fix.get("lat"), fix.get("lon")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return ""
    at = f"{lat:.5f},{lon:.5f}"
    if style.map_link:
        return at + " " + style.map_link.format(lat=f"{lat:.5f}", lon=f"{lon:.5f}")
    return at


def _when(tu: Any, style: Style) -> str:
    when = (
        dt.datetime.fromtimestamp(tu / 1000, tz=dt.UTC)
        if isinstance(tu, int) and not isinstance(tu, bool)
        else dt.datetime.now(dt.UTC)
    )
    local = when.astimezone(style.zone())
    return local.strftime("%m-%d %H:%M")
