"""When nobody answers a wearable's alarm: the configured steps in order, one every
escalate_every_s after ack_within_s, each reported; an ack or the worker's cancel stops
them; a restart neither forgets an alarm nor takes a step twice. Time is the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.escalation import Escalation, Unanswered
from floor.envelope import Signer

SIGNER = Signer(Ed25519PrivateKey.generate())


def body(kind: str, d: dict[str, Any]) -> bytes:
    payload = {"v": 1, "gw": "g", "ep": [1, b"\0" * 8], "seq": 1, "kind": kind, "src": d["device"]}
    return SIGNER.sign_bytes(
        cbor2.dumps(payload | {"prio": 0, "tq": "ntp", "recs": [{"tb": 0, "tu": 0, "d": d}]})
    )


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.now = [1_000_000]
        self.taken: list[tuple[str, int]] = []
        self.reports: list[dict[str, Any]] = []
        self.tmp = tmp

    def make(self) -> Escalation:
        def step(name: str) -> Any:
            async def take(u: Unanswered) -> Mapping[str, Any]:
                self.taken.append((name, u.seq))
                return {"did": name}

            return take

        return Escalation(
            ack_within_s=60,
            every_s=30,
            steps=[(n, step(n)) for n in ("bearers", "duty", "wearables")],
            state_file=self.tmp / "escalations.json",
            report=self.reports.append,
            now_ms=lambda: self.now[0],
        )

    def at(self, esc: Escalation, seconds: float) -> None:
        self.now[0] = 1_000_000 + int(seconds * 1000)
        asyncio.run(esc.tick())


def test_steps_in_order_each_reported_and_stopped_by_the_ack(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    esc = r.make()
    esc.committed(7, "sos.alarm", body("sos.alarm", {"device": "b1", "worker": "w1", "counter": 3}))
    esc.committed(
        8, "ais.distress", body("ais.distress", {"device": "sart", "mmsi": 970012345})
    )  # no ack exists
    r.at(esc, 59)
    assert r.taken == []
    r.at(esc, 61)
    r.at(esc, 62)  # the next step only after every_s
    assert r.taken == [("bearers", 7)]
    r.at(esc, 91)
    assert r.taken == [("bearers", 7), ("duty", 7)]
    assert [(x["step"], x["n"], x["alarm_seq"], x["did"]) for x in r.reports] == [
        ("bearers", 1, 7, "bearers"),
        ("duty", 2, 7, "duty"),
    ]
    assert r.reports[0]["worker"] == "w1" and r.reports[1]["waited_s"] == 91
    esc.acked(7)
    r.at(esc, 200)
    assert len(r.taken) == 2 and esc.waiting == {}


def test_a_cancel_stops_it_and_a_restart_takes_no_step_twice(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    esc = r.make()
    esc.committed(7, "worker.down", body("worker.down", {"device": "tag", "worker": "w2", "event": "fall"}))
    esc.committed(9, "sos.alarm", body("sos.alarm", {"device": "b1", "worker": "w1", "counter": 4}))
    r.at(esc, 61)
    assert sorted(r.taken) == [("bearers", 7), ("bearers", 9)]
    again = r.make()  # a restart
    r.at(again, 62)
    assert len(r.taken) == 2  # not taken twice
    r.at(again, 91)
    assert sorted(r.taken)[-2:] == [("duty", 7), ("duty", 9)]
    again.committed(10, "sos.cancel", body("sos.cancel", {"device": "b1", "worker": "w1", "counter": 5}))
    again.committed(11, "worker.down", body("worker.down", {"device": "tag", "event": "ok", "cancel": True}))
    r.at(again, 200)
    assert again.waiting == {} and len(r.taken) == 4
