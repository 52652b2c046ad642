"""The compact form's numbers are wire format: a platform decoding an SMS sent years ago
must read the same kind and keys. Written out here as they are on the wire, not derived
from the code, so a renumbering fails here, and an added code must be added here too."""

from __future__ import annotations

import cbor2

from floor import compact
from floor.kinds import LIFE_SAFETY_KINDS

WIRE_KINDS = {
    "sos.alarm": 0,
    "sos.cancel": 1,
    "dsc.distress": 2,
    "ais.distress": 3,
    "worker.down": 4,
    "worker.overdue": 5,
    "beidou.distress": 6,
}
WIRE_QUALITIES = {"gnss": 0, "ntp": 1, "rtc": 2, "persisted": 3, "none": 4}
WIRE_KEYS = {
    "device": 0,
    "worker": 1,
    "counter": 2,
    "uptime_ms": 3,
    "boot": 4,
    "authenticated": 5,
    "fix": 6,
    "lat": 7,
    "lon": 8,
    "alt": 9,
    "sats": 10,
    "hdop": 11,
    "speed": 12,
    "course": 13,
    "utc": 14,
    "age_ms": 15,
    "event": 16,
    "cancel": 17,
    "mmsi": 18,
    "call": 19,
    "nature": 20,
    "nature_code": 21,
    "position_enhanced": 22,
    "utc_hhmm": 23,
    "relay_of": 24,
    "ack_of": 25,
    "format": 26,
    "category": 27,
    "ack": 28,
    "folded": 29,
    "sog": 30,
    "cog": 31,
    "heading": 32,
    "nav_status": 33,
    "msg_type": 34,
    "channel": 35,
    "station": 36,
    "text": 37,
    "state": 38,
    "silent_s": 39,
    "interval_s": 40,
    "card": 41,
}


def test_the_wire_numbers_never_change() -> None:
    assert compact.KIND_CODES == WIRE_KINDS
    assert compact.QUALITY_CODES == WIRE_QUALITIES
    assert compact.KEY_CODES == WIRE_KEYS


def test_every_life_safety_kind_has_a_code_and_no_code_is_used_twice() -> None:
    assert set(LIFE_SAFETY_KINDS) <= set(compact.KIND_CODES)
    for table in (compact.KIND_CODES, compact.QUALITY_CODES, compact.KEY_CODES):
        assert len(set(table.values())) == len(table)


def test_a_packed_record_is_the_numbers_above() -> None:
    payload = {
        "v": 1,
        "gw": "g",
        "ep": [1, b"\0" * 8],
        "seq": 7,
        "kind": "worker.down",
        "src": "tag",
        "prio": 0,
        "tq": "ntp",
        "recs": [{"tb": 1, "tu": 2, "d": {"device": "tag", "event": "fall", "interval_s": 30}}],
    }
    packed = cbor2.loads(cbor2.dumps(compact.pack(payload)))
    assert packed[4] == 4 and packed[7] == 1 and packed[8][0][2] == {0: "tag", 16: "fall", 40: 30}
    assert compact.unpack(packed) == payload
