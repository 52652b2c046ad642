"""The station's view of the fleet (pure logic): dedup, rate shaping, distress, static, geofences.

One tracker serves every AIS receiver of a station, so the same report heard by
two receivers goes up once. Memory is bounded: the dedup window and the vessel
table are LRU-capped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from drivers.ais.parse import POSITION_TYPES, AisReport
from drivers.incidents import IncidentShaper
from floor.config import AisConfig, Geofence, fleet_problem

# MMSI prefixes of AIS search-and-rescue transmitters (ITU-R M.585-9 Annex 2):
# 970 AIS-SART, 972 man-overboard devices, 974 EPIRB-AIS.
BEACONS = {"970": "sart", "972": "mob", "974": "epirb"}
NAV_STATUS_SART_TEST = 15
MAX_DEDUP = 50_000

Output = tuple[str, dict[str, Any]]  # (kind, record data)


def point_in_polygon(lat: float, lon: float, polygon: tuple[tuple[float, float], ...]) -> bool:
    """Ray casting; fine for harbour-sized polygons that do not cross the antimeridian."""
    inside = False
    n = len(polygon)
    for i in range(n):
        y1, x1 = polygon[i]
        y2, x2 = polygon[(i + 1) % n]
        if (y1 > lat) != (y2 > lat):
            x = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x:
                inside = not inside
    return inside


@dataclass(slots=True)
class Vessel:
    mmsi: int
    last_tb: int = -(10**12)  # when a position was last published
    nav_status: int | None = None
    cog: float | None = None
    lat: float | None = None
    lon: float | None = None
    seen_tb: int = 0
    static: dict[str, Any] = field(default_factory=dict)
    inside: dict[str, bool] = field(default_factory=dict)  # per geofence
    home: set[str] = field(default_factory=set)  # geofences it has been seen inside
    via: str = "ais"  # how its last position was heard ("beidou": a BeiDou terminal's report)


MAX_HARBOUR = 4096  # vessels whose harbour state is kept across restarts


class VesselTracker:
    """Decides what of the AIS traffic goes up, and keeps who is outside each geofence.

    A little past the usual size: the vessel table is shared by the rate shaping, the
    static data and the harbour state (and its persistence), each a few methods; split,
    each would need the table and its LRU bound passed along."""

    def __init__(self, cfg: AisConfig, geofences: tuple[Geofence, ...] = ()) -> None:
        self._cfg = cfg
        self._fences = geofences
        self._seen: OrderedDict[str, int] = OrderedDict()  # payload -> tb
        self._vessels: OrderedDict[int, Vessel] = OrderedDict()
        self._outside_dirty = bool(geofences)
        self._outside_tb = -(10**12)
        self.fleets: dict[str, frozenset[int]] = {g.id: frozenset(g.fleet) for g in geofences}
        self.fleet_interval_s: float | None = None  # emergency posture: the home fleet's positions
        self.harbour_dirty = False  # who is inside which geofence changed since harbour() was saved
        # a beacon is one incident however often (and from however many receivers) heard
        self.beacons = IncidentShaper(repeat_s=cfg.beacon_repeat_s, move_m=cfg.beacon_move_m)
        self.duplicates = 0
        self.shaped = 0

    def _vessel(self, mmsi: int) -> Vessel:
        v = self._vessels.get(mmsi)
        if v is None:
            v = self._vessels[mmsi] = Vessel(mmsi)
            if len(self._vessels) > self._cfg.max_vessels:
                self._vessels.popitem(last=False)
        else:
            self._vessels.move_to_end(mmsi)
        return v

    def seen(self, msg_type: int, payload: str, tb: int) -> bool:
        """Whether this report was heard within the dedup window (counted); remembers it.
        A driver asks before decoding (`AisParser(seen=...)`), then offers with `deduped`."""
        if self._duplicate_key(f"{msg_type}:{payload}", tb):
            self.duplicates += 1
            return True
        return False

    def _duplicate(self, rep: AisReport) -> bool:
        return self._duplicate_key(f"{rep.msg_type}:{rep.payload}", rep.tb)

    def _duplicate_key(self, key: str, tb: int) -> bool:
        window = self._cfg.dedup_window_s * 1000
        if window <= 0:
            return False  # dedup off
        seen = self._seen
        while seen:
            oldest, first = next(iter(seen.items()))
            if tb - first <= window and len(seen) < MAX_DEDUP:
                break
            seen.popitem(last=False)
            del oldest
        if key in seen:
            return True
        seen[key] = tb
        return False

    def offer(self, rep: AisReport, station: str, *, deduped: bool = False) -> list[Output]:
        """One decoded report from receiver `station`; what to publish about it
        (`deduped`: `seen` was already asked for it)."""
        if not deduped and self._duplicate(rep):
            self.duplicates += 1
            return []
        beacon = BEACONS.get(str(rep.mmsi)[:3]) if len(str(rep.mmsi)) == 9 else None
        if rep.msg_type == 14:
            return self._safety_text(rep, station, beacon)
        if rep.msg_type in POSITION_TYPES:
            return self._position(rep, station, beacon)
        if rep.msg_type in (5, 24):
            return self._static(rep)
        return []

    def _record(self, rep: AisReport, station: str) -> dict[str, Any]:
        d: dict[str, Any] = {"mmsi": rep.mmsi}
        d.update(
            {k: v for k, v in rep.data.items() if k in ("lat", "lon", "sog", "cog", "heading", "nav_status")}
        )
        d["msg_type"] = rep.msg_type
        d["channel"] = rep.channel
        d["station"] = station
        return d

    def _position(self, rep: AisReport, station: str, beacon: str | None) -> list[Output]:
        v = self._vessel(rep.mmsi)
        status = rep.data.get("nav_status")
        cog = rep.data.get("cog")
        out: list[Output] = []
        if "lat" in rep.data:
            v.lat, v.lon, v.seen_tb, v.via = rep.data["lat"], rep.data["lon"], rep.tb, "ais"
            self._fence(v)
        if beacon is not None:
            rec = self._record(rep, station) | {"device": beacon}
            kind = "ais.beacon_test" if status == NAV_STATUS_SART_TEST else "ais.distress"
            out += self.beacons.offer(rep.mmsi, station, kind, rec, state=kind, now=rep.tb)
        else:
            turned = (
                self._cfg.min_course_change_deg > 0
                and cog is not None
                and v.cog is not None
                and abs((cog - v.cog + 180.0) % 360.0 - 180.0) >= self._cfg.min_course_change_deg
            )
            due = rep.tb - v.last_tb >= self._interval_s(rep.mmsi) * 1000
            if due or turned or status != v.nav_status:
                v.last_tb = rep.tb
                out.append(("ais.position", self._record(rep, station)))
            else:
                self.shaped += 1
        v.nav_status = status
        if cog is not None:
            v.cog = cog
        return out

    def located(self, mmsi: int, lat: float, lon: float, tb: int, *, via: str) -> None:
        """A vessel's position heard otherwise than by AIS (its BeiDou terminal's report, at
        a command terminal ashore): it counts in the recall like an AIS position."""
        v = self._vessel(mmsi)
        v.lat, v.lon, v.seen_tb, v.via = lat, lon, tb, via
        self._fence(v)

    def _interval_s(self, mmsi: int) -> float:
        """How often a vessel's position goes up: a home fleet's more often in emergency posture."""
        fast = self.fleet_interval_s
        if fast is not None and any(mmsi in fleet for fleet in self.fleets.values()):
            return min(fast, self._cfg.min_interval_s)
        return self._cfg.min_interval_s

    def _safety_text(self, rep: AisReport, station: str, beacon: str | None) -> list[Output]:
        text = str(rep.data.get("text", "")).upper()
        if beacon is None or not any(w in text for w in ("SART", "MOB", "EPIRB")):
            return []
        v = self._vessel(rep.mmsi)
        rec: dict[str, Any] = {
            "mmsi": rep.mmsi,
            "device": beacon,
            "text": text,
            "msg_type": 14,
            "channel": rep.channel,
            "station": station,
        }
        if v.lat is not None:
            rec["lat"], rec["lon"] = v.lat, v.lon
        if "TEST" in text:
            kind = "ais.beacon_test"
        elif "ACTIVE" in text:
            kind = "ais.distress"
        else:
            return []
        return self.beacons.offer(rep.mmsi, station, kind, rec, state=kind, now=rep.tb)

    def due(self, station: str, now: int) -> list[Output]:
        """Beacon reports of `station` held back by a gap or a budget that may go up now."""
        return self.beacons.due(station, now)

    def pending(self, station: str) -> bool:
        return self.beacons.pending(station)

    def snapshot(self) -> dict[str, Any]:
        """The station's entry in the status (`ais`)."""
        return {"duplicates": self.duplicates, "shaped": self.shaped, "beacons": self.beacons.snapshot()}

    def _static(self, rep: AisReport) -> list[Output]:
        v = self._vessel(rep.mmsi)
        fields = {k: val for k, val in rep.data.items() if k != "part"}
        merged = v.static | fields
        if merged == v.static:
            return []
        v.static = merged
        return [("ais.static", {"mmsi": rep.mmsi, **merged})]

    def _fence(self, v: Vessel) -> None:
        if v.lat is None or v.lon is None:
            return
        for g in self._fences:
            now_in = point_in_polygon(v.lat, v.lon, g.polygon)
            if now_in:
                v.home.add(g.id)
            if v.inside.get(g.id) != now_in:
                v.inside[g.id] = now_in
                self.harbour_dirty = True
                if g.id in v.home or v.mmsi in self.fleets[g.id]:
                    self._outside_dirty = True

    def outside(self) -> list[dict[str, Any]]:
        """Per geofence, who is not in: each vessel seen inside it that is now outside
        (`left`), and each of its home fleet that is outside without having been seen
        inside (`outside`) or has not been heard at all (`unheard`), with last positions."""
        snaps = []
        for g in self._fences:
            fleet = self.fleets[g.id]
            vessels = []
            for v in self._vessels.values():
                if v.inside.get(g.id) is False and (g.id in v.home or v.mmsi in fleet):
                    vessels.append(self._listed(v, "left" if g.id in v.home else "outside"))
            heard = {v.mmsi for v in self._vessels.values() if g.id in v.inside}
            vessels += [{"mmsi": m, "state": "unheard"} for m in fleet if m not in heard]
            vessels.sort(key=lambda x: x["mmsi"])
            inside = sum(1 for v in self._vessels.values() if v.inside.get(g.id))
            snap = {"geofence": g.id, "count": len(vessels), "vessels": vessels, "inside": inside}
            if fleet:
                snap["fleet"] = len(fleet)
            snaps.append(snap)
        return snaps

    @staticmethod
    def _listed(v: Vessel, state: str) -> dict[str, Any]:
        out = {"mmsi": v.mmsi, "lat": v.lat, "lon": v.lon, "state": state}
        if v.via != "ais":
            out["via"] = v.via
        if "name" in v.static:
            out["name"] = v.static["name"]
        return out

    def set_fleet(self, geofence: str, mmsis: list[int]) -> bool:
        """The platform names a geofence's home fleet; False for a geofence not configured."""
        if geofence not in self.fleets:
            return False
        self.fleets[geofence] = frozenset(mmsis)
        self._outside_dirty = self.harbour_dirty = True
        return True

    def harbour(self) -> dict[str, Any]:
        """What must survive a restart (bounded): the fleets, and where each vessel that
        was ever inside a geofence, or belongs to a fleet, was last known to be."""
        fleet: set[int] = set()
        for members in self.fleets.values():
            fleet |= members
        kept = [v for v in self._vessels.values() if v.inside and (v.home or v.mmsi in fleet)]
        self.harbour_dirty = False
        return {
            "fleets": {g: sorted(m) for g, m in self.fleets.items()},
            "vessels": [
                {
                    "mmsi": v.mmsi,
                    "lat": v.lat,
                    "lon": v.lon,
                    "inside": v.inside,
                    "home": sorted(v.home),
                    **({"name": v.static["name"]} if "name" in v.static else {}),
                }
                for v in kept[-MAX_HARBOUR:]
            ],
        }

    def restore(self, doc: Any) -> int:
        """Take back what harbour() saved (before any report is heard); the vessels restored.
        What does not fit the configured geofences, or is not well formed, is left out."""
        if not isinstance(doc, dict):
            return 0
        fleets = doc.get("fleets")
        for g, mmsis in fleets.items() if isinstance(fleets, dict) else ():
            if g in self.fleets and fleet_problem(mmsis) is None:
                self.fleets[g] = frozenset(mmsis)
        n = 0
        vessels = doc.get("vessels")
        for rec in (vessels if isinstance(vessels, list) else [])[-MAX_HARBOUR:]:
            try:
                mmsi, lat, lon = int(rec["mmsi"]), float(rec["lat"]), float(rec["lon"])
                inside = {g: bool(x) for g, x in rec["inside"].items() if g in self.fleets}
                home = {g for g in rec["home"] if g in self.fleets}
                name = rec.get("name")
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            v = self._vessel(mmsi)
            v.lat, v.lon, v.inside, v.home = lat, lon, inside, home
            if isinstance(name, str):
                v.static["name"] = name
            n += 1
        self._outside_dirty = bool(self._fences)
        return n

    def tick(self, now: int, *, force: bool = False) -> list[Output]:
        """A `vessels.outside` snapshot when the set changed (rate-limited), or on request."""
        if not self._fences:
            return []
        due = now - self._outside_tb >= self._cfg.outside_min_interval_s * 1000
        if force or (self._outside_dirty and due):
            self._outside_dirty = False
            self._outside_tb = now
            return [("vessels.outside", snap) for snap in self.outside()]
        return []
