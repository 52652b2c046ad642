"""Emergency posture (平战转换) by a signed command for the gateway's group: every
wearable alerted, messages made in it say so, the status shows it; it holds through a
SIGKILL and a start, returns to everyday by itself at its expiry, each change published;
a posture for another group is refused."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_wearables import GW, Rig, recs, wait_rec
from tests.support.broker import Mosquitto
from tests.support.wearables import button

POSTURE = "[posture]\nrecall_every_s = 5\nstatus_every_s = 5\n"


@pytest.fixture
def rig(broker: Mosquitto, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(
        broker,
        tmp_path,
        [button("btn-1", 1, "w-1")],
        commands=True,
        extra=POSTURE,
        gateway_extra='groups = ["taishan"]',
    )
    r.gw.start()
    r.gw.wait_status(lambda d: d["link"]["state"] == "up")
    r.connected("btn-1")
    yield r
    r.stop()


def group_command(rig: Rig, group: str, args: dict[str, object]) -> str:
    assert rig.platform is not None
    cid, data = rig.platform.command(f"group:{group}", "posture.set", args)
    rig.platform.send(GW, data, topic=f"gridedge/v1/group/{group}/cmd")
    return cid


def test_emergency_posture_holds_through_a_restart_and_ends_at_its_expiry(rig: Rig) -> None:
    now = int(time.time() * 1000)
    cid = group_command(
        rig, "taishan", {"posture": "emergency", "reason": "台风 Yagi", "expires": now + 25_000}
    )
    res = wait_rec(rig.col, "cmd.result", lambda d: d["id"] == cid)
    assert res["ok"] and res["posture"] == "emergency"
    rec = wait_rec(rig.col, "gateway.posture", lambda d: d["posture"] == "emergency")
    assert rec["reason"] == "台风 Yagi" and rec["by"] == "command" and rec["expires_ms"] == now + 25_000
    wait_rec(
        rig.col, "alert.delivery", lambda d: d.get("alert") == "posture" and d["ok"]
    )  # the button showed it
    assert rig.gw.wait_status(lambda d: d["posture"]["posture"] == "emergency")
    # what is made now says so
    rig.col.wait_for(lambda ms: any(m.payload.get("posture") == "emergency" for m in ms), timeout=15)
    wait_rec(rig.col, "diag.snapshot", timeout=15)  # the status, every status_every_s
    rig.gw.kill(signal.SIGKILL)
    rig.gw.start()
    doc = rig.gw.wait_status(lambda d: d["link"]["state"] == "up")
    assert doc["posture"]["posture"] == "emergency" and doc["posture"]["reason"] == "台风 Yagi"
    # at its expiry it ends by itself, and says so
    ended = wait_rec(rig.col, "gateway.posture", lambda d: d["posture"] == "everyday", timeout=40)
    assert ended["by"] == "expiry"
    assert rig.gw.wait_status(lambda d: d["posture"]["posture"] == "everyday")


def test_a_posture_for_another_group_is_refused(rig: Rig) -> None:
    now = int(time.time() * 1000)
    assert rig.platform is not None
    cid, data = rig.platform.command(
        "group:yangjiang", "posture.set", {"posture": "emergency", "expires": now + 60_000}
    )
    rig.platform.send(GW, data, topic="gridedge/v1/group/taishan/cmd")  # on our group's topic, for another
    res = wait_rec(rig.col, "cmd.result", lambda d: d["id"] == cid)
    assert not res["ok"] and res["error"] == "wrong_target"
    bad = group_command(rig, "taishan", {"posture": "emergency", "expires": now + 10**10})  # past max_hours
    assert wait_rec(rig.col, "cmd.result", lambda d: d["id"] == bad)["error"] == "bad_args"
    assert not recs(rig.col, "gateway.posture")
    assert rig.gw.status()["posture"]["posture"] == "everyday"
