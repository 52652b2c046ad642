"""The third wearable kind, added as one module (drivers/ble/kinds/man_down.py): a lone
worker's man-down tag, simulated with real GATT, against the gateway process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.ble import profiles as p
from tests.integration.test_wearables import Rig, recs, wait_rec
from tests.support.broker import Mosquitto
from tests.support.wearables import camera, event_key, tag


@pytest.fixture
def rig(broker: Mosquitto, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(broker, tmp_path, [tag("tag-1", 1, "w-7", interval_s=2), camera("cam-1", 1, "w-7")])
    r.gw.start()
    r.gw.wait_status(lambda d: d["link"]["state"] == "up")
    r.connected("tag-1", "cam-1")
    yield r
    r.stop()


def test_a_fall_is_a_life_safety_alarm_answered_after_commit(rig: Rig) -> None:
    counter = rig.sim.call("tag", device="tag-1", type="fall")["counter"]
    rig.sim.call("wait", device="tag-1", counter=counter, timeout=10)
    down = wait_rec(rig.col, "worker.down")
    msg = rig.col.up("worker.down")[0].payload
    assert msg["prio"] == 0 and msg["src"] == "tag-1"
    assert down["event"] == "fall" and down["worker"] == "w-7" and down["counter"] == counter
    assert ["received", counter] in rig.sim.call("state")["wearables"]["tag-1"]["feedback"]
    # the wearer's camera records, as for an SOS
    wait_rec(rig.col, "camera.recording", lambda d: d["recording"])
    assert [1, int(p.CameraReason.SOS)] in rig.sim.call("state")["wearables"]["cam-1"]["controls"]
    # a false alarm cancelled on the tag
    ok = rig.sim.call("tag", device="tag-1", type="ok")["counter"]
    cancel = wait_rec(rig.col, "worker.down", lambda d: d.get("cancel"))
    assert cancel["counter"] == ok and cancel["event"] == "ok"
    # the same event resent is answered again, never a second alarm
    key = bytes.fromhex(event_key("tag-1"))
    rig.sim.call("replay", device="tag-1", hex=p.encode_counted(3, counter, 0, key=key, boot=1).hex())
    assert len(recs(rig.col, "worker.down")) == 2


def test_a_missed_check_in_makes_the_worker_overdue_until_heard_again(rig: Rig) -> None:
    # checking in every 2 s: several intervals pass with nobody overdue (the control)
    deadline = time.monotonic() + 20
    while rig.sim.call("state")["wearables"]["tag-1"]["counter"] < 4:  # four check-ins: 8 s
        assert time.monotonic() < deadline, "the tag did not check in"
        time.sleep(0.2)
    assert not recs(rig.col, "worker.overdue")
    rig.sim.call("checkins", device="tag-1", on=False)
    overdue = wait_rec(rig.col, "worker.overdue", lambda d: d["state"] == "overdue", timeout=20)
    assert overdue["worker"] == "w-7" and overdue["interval_s"] == 2 and overdue["silent_s"] >= 3
    assert rig.col.up("worker.overdue")[0].payload["prio"] == 0
    rig.sim.call("checkins", device="tag-1", on=True)
    wait_rec(rig.col, "worker.overdue", lambda d: d["state"] == "resolved", timeout=20)
    assert [d["state"] for d in recs(rig.col, "worker.overdue")] == ["overdue", "resolved"]
