"""The page's and `gridedge status`'s life-safety list holds incidents, not repeats: an
AIS-SART heard every minute for hours is one row with its count, and a worker's SOS
stays on the list beside it."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.recent import KEEP, RecentAlarms
from floor.envelope import Signer

SIGNER = Signer(Ed25519PrivateKey.generate())


def body(seq: int, kind: str, d: dict[str, Any]) -> bytes:
    payload = {"v": 1, "gw": "gw-1", "ep": [1, b"\x00" * 8], "seq": seq, "kind": kind, "src": "x",
               "prio": 0, "tq": "gnss", "recs": [{"tb": 1, "tu": None, "d": d}]}  # fmt: skip
    return SIGNER.sign(payload)


def test_a_beacon_s_repeats_are_one_incident_and_an_sos_stays_listed() -> None:
    recent = RecentAlarms()
    recent.committed(1, "sos.alarm", body(1, "sos.alarm", {"worker": "w-1", "device": "sos-1", "counter": 7}))
    for seq in range(2, 2 + 3 * KEEP):  # a SART, every minute, for an hour
        recent.committed(seq, "ais.distress", body(seq, "ais.distress", {"mmsi": 970123456}))
        recent.acked(seq)
    listed = recent.snapshot()
    assert [(x["kind"], x["messages"]) for x in listed] == [("ais.distress", 3 * KEEP), ("sos.alarm", 1)]
    assert listed[0]["seq"] == 1 + 3 * KEEP and listed[0]["state"] == "delivered"
    assert listed[0]["first_at"] <= listed[0]["at"]
    # a second press is a new incident; the same press sent again is the same one
    recent.committed(
        100, "sos.alarm", body(100, "sos.alarm", {"worker": "w-1", "device": "sos-1", "counter": 8})
    )
    recent.committed(
        101, "sos.alarm", body(101, "sos.alarm", {"worker": "w-1", "device": "sos-1", "counter": 8})
    )
    assert [(x["kind"], x.get("counter"), x["messages"]) for x in recent.snapshot()] == [
        ("sos.alarm", 8, 2), ("ais.distress", None, 3 * KEEP), ("sos.alarm", 7, 1),
    ]  # fmt: skip
    # an older repeat's fate is its own: the incident shows its latest message's
    recent.acked(100)
    assert recent.snapshot()[0]["state"] == "stored" and recent.get(100)["state"] == "delivered"  # type: ignore[index]
    recent.by_bearer(101, "sms")
    assert recent.snapshot()[0]["bearers"] == ["sms"]


def test_the_list_keeps_the_latest_incidents() -> None:
    recent = RecentAlarms()
    for i in range(KEEP + 5):
        recent.committed(i, "dsc.distress", body(i, "dsc.distress", {"mmsi": 412000000 + i}))
    listed = recent.snapshot()
    assert len(listed) == KEEP and listed[0]["mmsi"] == 412000000 + KEEP + 4


def test_every_life_safety_kind_is_said_in_words_on_the_page() -> None:
    from edge.web.strings import PAGE_STRINGS
    from floor.kinds import LIFE_SAFETY_KINDS

    assert set(LIFE_SAFETY_KINDS) <= set(PAGE_STRINGS)
