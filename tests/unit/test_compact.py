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
}
WIRE_QUALITIES = {"gnss": 0, "ntp": 1, "rtc": 2, "persisted": 3, "none": 4}
WIRE_KEYS = dict(
    zip(
        (
            "device worker counter uptime_ms boot authenticated fix lat lon alt sats hdop speed "
            "course utc age_ms event cancel mmsi call nature nature_code position_enhanced utc_hhmm "
            "relay_of ack_of format category ack folded sog cog heading nav_status msg_type channel "
            "station text state silent_s interval_s"
        ).split(),
        range(41),
        strict=True,
    )
)


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
