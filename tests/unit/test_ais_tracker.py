"""The station tracker: dedup, shaping, beacons, static data, geofence."""

from __future__ import annotations

from drivers.ais.parse import AisReport
from drivers.ais.tracker import VesselTracker, point_in_polygon
from floor.config import AisConfig, Geofence

HARBOUR = Geofence(id="harbour", polygon=((21.0, 112.0), (21.0, 113.0), (22.0, 113.0), (22.0, 112.0)))


def pos(
    tb: int,
    mmsi: int,
    lat: float = 21.5,
    lon: float = 112.5,
    *,
    status: int = 0,
    cog: float = 90.0,
    payload: str | None = None,
) -> AisReport:
    data = {"lat": lat, "lon": lon, "sog": 5.0, "cog": cog, "nav_status": status}
    return AisReport(tb, 1, mmsi, "A", data, payload or f"{mmsi}-{tb}-{lat}-{lon}-{status}-{cog}")


def kinds(out: list[tuple[str, dict]]) -> list[str]:  # type: ignore[type-arg]
    return [k for k, _ in out]


def test_same_report_from_two_receivers_goes_up_once() -> None:
    t = VesselTracker(AisConfig(min_interval_s=0))
    r = pos(0, 412000001, payload="same")
    assert kinds(t.offer(r, "north")) == ["ais.position"]
    assert t.offer(r, "south") == []
    assert t.duplicates == 1


def test_rate_shaping_lets_turns_and_status_changes_through() -> None:
    t = VesselTracker(AisConfig(min_interval_s=10, min_course_change_deg=20))
    m = 412000002
    assert kinds(t.offer(pos(0, m), "s")) == ["ais.position"]
    assert t.offer(pos(1000, m, cog=95), "s") == []
    assert kinds(t.offer(pos(2000, m, cog=130), "s")) == ["ais.position"]  # turned 35 degrees
    assert kinds(t.offer(pos(3000, m, cog=130, status=5), "s")) == ["ais.position"]  # moored
    assert t.offer(pos(4000, m, cog=130, status=5), "s") == []
    assert kinds(t.offer(pos(13_500, m, cog=130, status=5), "s")) == ["ais.position"]


def test_sart_active_is_distress_and_test_mode_is_not() -> None:
    t = VesselTracker(AisConfig())
    ((kind, rec),) = t.offer(pos(0, 970012345, status=14), "s")
    assert kind == "ais.distress" and rec["device"] == "sart" and rec["lat"] == 21.5
    assert kinds(t.offer(pos(1, 972012345, status=15), "s")) == ["ais.beacon_test"]
    text = AisReport(3, 14, 974012345, "B", {"text": "EPIRB ACTIVE"}, "t1")
    ((kind, rec),) = t.offer(text, "s")
    assert kind == "ais.distress" and rec["device"] == "epirb"
    assert kinds(t.offer(AisReport(4, 14, 973012345, "B", {"text": "SART TEST"}, "t2"), "s")) == []
    assert t.offer(AisReport(5, 14, 412000000, "B", {"text": "SART ACTIVE"}, "t3"), "s") == []


def test_a_beacon_is_one_incident_its_repeats_folded() -> None:
    """Its first report at once; a repeat in place waits for `beacon_repeat_s`; a move or a
    change of state goes up after the incident's minimum gap, carrying the count folded."""
    t = VesselTracker(AisConfig(beacon_repeat_s=60.0, beacon_move_m=50.0))
    m = 970012345
    assert kinds(t.offer(pos(0, m, status=14), "s")) == ["ais.distress"]
    assert t.offer(pos(1_000, m, status=14), "s") == []  # the same place: folded
    assert t.offer(pos(2_000, m, 21.51, status=14), "s") == []  # moved 1.1 km, but within the gap
    assert t.pending("s")
    ((kind, rec),) = t.due("s", 6_000)  # the gap has passed: the move goes up
    assert kind == "ais.distress" and rec["lat"] == 21.51 and rec["folded"] == 1
    assert t.offer(pos(12_000, m, 21.51, status=14), "s") == []
    assert t.due("s", 30_000) == []
    ((_, rec),) = t.due("s", 66_000)  # still transmitting: a reminder once a minute
    assert "folded" not in rec  # the one report heard since is the one that goes up
    ((kind, _),) = t.offer(pos(80_000, m, 21.51, status=15), "s")  # switched to test mode
    assert kind == "ais.beacon_test"


def test_static_data_on_change_with_type24_halves_joined() -> None:
    t = VesselTracker(AisConfig())
    a = AisReport(0, 24, 412000003, "A", {"part": 0, "name": "MIN YU 1"}, "a")
    b = AisReport(1, 24, 412000003, "A", {"part": 1, "callsign": "BZ123", "ship_type": 30}, "b")
    assert t.offer(a, "s") == [("ais.static", {"mmsi": 412000003, "name": "MIN YU 1"})]
    ((_, rec),) = t.offer(b, "s")
    assert rec == {"mmsi": 412000003, "name": "MIN YU 1", "callsign": "BZ123", "ship_type": 30}
    assert t.offer(AisReport(2, 24, 412000003, "A", {"part": 0, "name": "MIN YU 1"}, "a2"), "s") == []


def test_vessels_outside_the_harbour() -> None:
    t = VesselTracker(AisConfig(min_interval_s=0, outside_min_interval_s=5), (HARBOUR,))
    t.offer(pos(0, 412000010), "s")  # in the harbour
    t.offer(pos(0, 412000011), "s")
    t.offer(pos(0, 412000012, lat=30.0), "s")  # a passing ship never seen inside: not ours
    t.tick(0, force=True)
    t.offer(pos(1000, 412000010, lat=20.5), "s")  # left
    ((kind, snap),) = t.tick(6000)
    assert kind == "vessels.outside"
    assert snap["geofence"] == "harbour" and [v["mmsi"] for v in snap["vessels"]] == [412000010]
    assert t.tick(7000) == []  # nothing changed
    t.offer(pos(8000, 412000010), "s")  # came home
    ((_, snap),) = t.tick(20_000)
    assert snap["count"] == 0


def test_point_in_polygon() -> None:
    assert point_in_polygon(21.5, 112.5, HARBOUR.polygon)
    assert not point_in_polygon(22.5, 112.5, HARBOUR.polygon)


def test_vessel_table_is_bounded() -> None:
    t = VesselTracker(AisConfig(max_vessels=100, min_interval_s=0))
    for i in range(1000):
        t.offer(pos(i, 412100000 + i), "s")
    assert len(t._vessels) == 100


def test_harbour_state_round_trips_and_a_bad_file_is_ignored() -> None:
    cfg = AisConfig(min_interval_s=0, outside_min_interval_s=0)
    fence = Geofence(id=HARBOUR.id, polygon=HARBOUR.polygon, fleet=(412000010, 412000020))
    t = VesselTracker(cfg, (fence,))
    t.offer(pos(0, 412000010), "s")
    t.offer(pos(1000, 412000010, lat=20.5), "s")  # left
    assert t.harbour_dirty
    saved = t.harbour()
    assert not t.harbour_dirty
    again = VesselTracker(cfg, (fence,))
    assert again.restore(saved) == 1
    ((_, snap),) = again.tick(0, force=True)
    assert [(v["mmsi"], v["state"]) for v in snap["vessels"]] == [(412000010, "left"), (412000020, "unheard")]
    for junk in (None, [], {"fleets": {"harbour": ["x"]}, "vessels": [{"mmsi": "?"}, 7, {"lat": 1}]}):
        fresh = VesselTracker(cfg, (fence,))
        assert fresh.restore(junk) == 0
        assert fresh.fleets["harbour"] == frozenset(fence.fleet)
