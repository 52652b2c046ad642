"""An alarm's journey as the worker and the control room see it: the button shows
*received*, then *sent* once the broker has it, then *acknowledged*; an ack that comes
after the worker cancelled is shown and reported as cancelled; an alarm nobody
acknowledges is escalated step by step, each step published, until the ack."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_wearables import Rig, recs, wait_rec
from tests.support.broker import Mosquitto
from tests.support.wearables import button

ESCALATION = (
    '[alarms]\nack_within_s = 2\nescalate_every_s = 1\nescalation = ["bearers", "duty", "wearables"]\n'
)


@pytest.fixture
def rig(broker: Mosquitto, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(
        broker,
        tmp_path,
        [button("btn-1", 1, "w-1"), button("btn-2", 2, "w-2")],
        commands=True,
        extra=ESCALATION,
    )
    r.gw.start()
    r.gw.wait_status(lambda d: d["link"]["state"] == "up")
    r.connected("btn-1", "btn-2")
    yield r
    r.stop()


def feedback(rig: Rig, dev: str) -> list[list[object]]:
    fb: list[list[object]] = rig.sim.call("state")["wearables"][dev]["feedback"]
    return fb


def wait_feedback(rig: Rig, dev: str, want: list[object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while want not in feedback(rig, dev):
        assert time.monotonic() < deadline, feedback(rig, dev)
        time.sleep(0.05)


def test_received_then_sent_then_acknowledged_and_escalation_stops(rig: Rig) -> None:
    counter, _ = rig.press("btn-1")
    alarm = wait_rec(rig.col, "sos.alarm", lambda d: d["counter"] == counter)
    seq = next(m.payload["seq"] for m in rig.col.up("sos.alarm"))
    wait_feedback(rig, "btn-1", ["sent", counter])  # the broker has it
    shown = [p for p, c in feedback(rig, "btn-1") if c == counter]
    assert shown.index("received") < shown.index("sent")
    # nobody answers: the steps, in order, one a second after two seconds, each published
    steps = rig.col.wait_for(lambda _ms: len(recs(rig.col, "alarm.escalated")) >= 3, timeout=15)
    assert steps
    got = sorted(recs(rig.col, "alarm.escalated"), key=lambda d: d["n"])
    assert [(d["step"], d["n"], d["alarm_seq"], d["worker"]) for d in got] == [
        ("bearers", 1, seq, "w-1"),
        ("duty", 2, seq, "w-1"),
        ("wearables", 3, seq, "w-1"),
    ]
    assert got[2]["wearables"] == 1  # the other worker's button, not the wearer's own
    assert any(p == "alert" for p, _c in feedback(rig, "btn-2"))
    res = rig.command("sos.ack", {"device": "btn-1", "alarm_seq": seq})
    assert res["ok"] and res["cancelled"] is False
    wait_feedback(rig, "btn-1", ["acknowledged", counter])
    assert alarm["worker"] == "w-1"
    # a second alarm, acknowledged before its first step: none is taken
    counter2, _ = rig.press("btn-2")
    wait_rec(rig.col, "sos.alarm", lambda d: d["counter"] == counter2 and d["device"] == "btn-2")
    seq2 = max(m.payload["seq"] for m in rig.col.up("sos.alarm"))
    assert rig.command("sos.ack", {"device": "btn-2", "alarm_seq": seq2})["ok"]
    time.sleep(3.5)
    assert not [d for d in recs(rig.col, "alarm.escalated") if d["alarm_seq"] == seq2]


def test_an_ack_after_the_workers_cancel_is_answered_as_cancelled(rig: Rig) -> None:
    counter, _ = rig.press("btn-1")
    wait_rec(rig.col, "sos.alarm", lambda d: d["counter"] == counter)
    seq = next(m.payload["seq"] for m in rig.col.up("sos.alarm"))
    rig.press("btn-1", "triple")  # the worker cancels
    wait_rec(rig.col, "sos.cancel", lambda d: d["device"] == "btn-1")
    res = rig.command("sos.ack", {"device": "btn-1", "alarm_seq": seq})
    assert res["ok"] and res["cancelled"] is True
    wait_feedback(rig, "btn-1", ["cancelled", counter])
    ack = wait_rec(rig.col, "alert.delivery", lambda d: d.get("alarm_seq") == seq)
    assert ack["cancelled"] is True and ack["state"] == "delivered"
    time.sleep(2.5)  # past ack_within_s: the cancel stopped the escalation
    assert not [d for d in recs(rig.col, "alarm.escalated") if d["alarm_seq"] == seq]
