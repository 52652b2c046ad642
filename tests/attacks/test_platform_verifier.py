"""Threat: one gateway of the fleet (compromised, or just broken) sends messages that are
validly signed and bound to its key but not messages any consumer can take. What was
seen: a record with a byte-string map key stopped `gridedge verify` (a TypeError from
json.dumps); the next honest gateway's message was never printed, and the redelivered
bad one was counted as valid thousands of times. The verifier must refuse such a
message, count it against that gateway, go on with the rest of the fleet, and never
count a message twice."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from floor.envelope import Signer, load_private_key
from tests.support.broker import Mosquitto
from tests.support.gateway import write_keypair
from tools.verify import Tally, run_verify

PREFIX = "gridedge/v1"


def payload(gw: str, seq: int, d: Any, kind: str = "gnss.fix") -> dict[str, Any]:
    return {
        "v": 1,
        "gw": gw,
        "ep": [1, b"\x01" * 8],
        "seq": seq,
        "kind": kind,
        "src": "x",
        "prio": 2,
        "tq": "gnss",
        "recs": [{"tb": seq, "tu": 1_800_000_000_000 + seq, "d": d}],
    }


SHAPES = [  # signed and well-formed CBOR, but no consumer can take it: junk of that gateway
    {b"\x00key": 1},  # a byte-string map key (what was seen)
    {"list": [{b"k": 1}]},
    {"nested": {"deeper": {(1, 2): "array key"}}},
]
UNREADABLE = [  # refused before anything reads the payload (floor/cbor_guard.py)
    {"tag": cbor2.CBORTag(1234, "x")},
    {"deep": json.loads("[" * 40 + "]" * 40)},
]
JUNK = SHAPES + UNREADABLE


def raw_sign(signer: Signer, p: dict[str, Any]) -> bytes:
    """Signed as the gateway would sign it, whatever is inside (cbor2 takes what json cannot)."""
    return signer.sign_bytes(cbor2.dumps(p))


@pytest.mark.parametrize("junk", JUNK, ids=["bytes-key", "int-key", "deep-tuple-key", "tag", "too-deep"])
def test_a_gateways_junk_is_refused_and_counted_against_it(tmp_path: Path, junk: Any) -> None:
    a_key, a_pub = write_keypair(tmp_path, "a")
    b_key, b_pub = write_keypair(tmp_path, "b")
    a, b = Signer(load_private_key(a_key.read_bytes())), Signer(load_private_key(b_key.read_bytes()))
    from tools.verify import load_keys

    keys, gateways = load_keys([f"gw-a={a_pub}", f"gw-b={b_pub}"])
    t = Tally(gateways=gateways)
    bad = t.add(f"{PREFIX}/gw-a/up/gnss.fix", raw_sign(a, payload("gw-a", 1, junk)), keys)
    assert bad["ok"] is False and (bad.get("gw") == "gw-a") == (junk in SHAPES)
    json.dumps(bad)  # whatever it is, the line prints
    good = t.add(f"{PREFIX}/gw-b/up/gnss.fix", raw_sign(b, payload("gw-b", 1, {"lat": 1.0})), keys)
    assert good["ok"] is True
    for _ in range(3):  # redelivered
        assert t.add(f"{PREFIX}/gw-b/up/gnss.fix", raw_sign(b, payload("gw-b", 1, {"lat": 1.0})), keys)[
            "duplicate"
        ]
    summary = t.summary()
    assert summary["valid"] == 1 and summary["duplicates"] == 3 and summary["invalid"] == 1
    assert summary["junk_by_gateway"] == ({"gw-a": 1} if junk in SHAPES else {})


def test_the_verifier_goes_on_for_the_fleet_over_mqtt(broker: Mosquitto, tmp_path: Path) -> None:
    a_key, a_pub = write_keypair(tmp_path, "a")
    b_key, b_pub = write_keypair(tmp_path, "b")
    a, b = Signer(load_private_key(a_key.read_bytes())), Signer(load_private_key(b_key.read_bytes()))
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}"
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    out = io.StringIO()

    async def go() -> dict[str, Any]:
        task = asyncio.ensure_future(
            run_verify(
                host="127.0.0.1",
                port=broker.port,
                pubkeys=[f"gw-a={a_pub}", f"gw-b={b_pub}"],
                prefix=PREFIX,
                count=len(JUNK) + 3,
                timeout=20,
                out=out,
            )
        )
        await asyncio.sleep(0.5)  # subscribed
        for i, junk in enumerate(JUNK, 1):
            client.publish(
                f"{PREFIX}/gw-a/up/gnss.fix", raw_sign(a, payload("gw-a", i, junk)), qos=1
            ).wait_for_publish(5)
        for _ in range(3):
            client.publish(
                f"{PREFIX}/gw-b/up/gnss.fix", raw_sign(b, payload("gw-b", 1, {"lat": 1.0})), qos=1
            ).wait_for_publish(5)
        return await task

    try:
        started = time.monotonic()
        summary = asyncio.run(go())
    finally:
        client.loop_stop()
        client.disconnect()
    assert time.monotonic() - started < 20
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    honest = [x for x in lines if x.get("gw") == "gw-b" and x.get("ok")]
    assert len(honest) == 3 and sum(bool(x.get("duplicate")) for x in honest) == 2
    assert summary["valid"] == 1 and summary["invalid"] == len(JUNK)
    assert summary["junk_by_gateway"] == {"gw-a": len(SHAPES)}
