"""Time the platform can rely on: the boot id with each epoch, a `time.anchor` once the
clock is trusted, and records stamped before that re-dated by `gridedge verify` (as a
platform does; docs/envelope-and-topics.md, "Re-dating")."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.gateway import epochs, gnss_rig, start_verifier

AHEAD_MS = 7_200_000  # the GNSS time is two hours from the machine's clock


def test_records_stamped_before_the_clock_was_trusted_are_re_dated_by_the_anchor(
    broker: Mosquitto, tmp_path: Path
) -> None:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with gnss_rig(broker.port, tmp_path) as (pty, gw, col):
        verifier = start_verifier(broker.port, gw.pub, "--until-idle", "3", "--timeout", "60")
        try:
            doc = gw.wait_status(lambda d: d["clock"]["tq"] not in ("gnss", "ntp"))
            assert doc["clock"]["tq"] in ("persisted", "none"), "the test needs an untrusted clock at start"
            col.wait_for(lambda _ms: bool(col.up("device.state")))
            gw.kill()  # a restart in the same boot: the anchor of the next epoch dates this one's records
            gw.start()
            gw.wait_device_open("gnss0")
            gw.wait_status(lambda d: d["clock"]["tq"] not in ("gnss", "ntp"))
            pty.write(epochs(int((time.time() * 1000 + AHEAD_MS) // 1000), n=3))
            gw.wait_status(lambda d: d["clock"]["tq"] == "gnss")
            col.wait_for(lambda _ms: bool(col.up("time.anchor")))
            out, _ = verifier.communicate(timeout=90)
        finally:
            if verifier.poll() is None:
                verifier.kill()
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    (anchor_msg,) = col.up("time.anchor")
    anchor = anchor_msg.payload["recs"][0]["d"]
    assert anchor["boot"] == boot and anchor["tq"] == "gnss"
    births = [m for m in col.messages if m.payload["kind"] == "gateway.status"]
    assert {m.payload["recs"][0]["d"]["boot"] for m in births} == {boot}
    assert len({tuple(m.payload["ep"]) for m in births}) == 2  # both epochs said which boot
    # every untrusted record of both epochs was re-dated, by the anchor's arithmetic
    untrusted = {
        (m.payload["ep"][0], m.payload["seq"]): m.payload
        for m in col.messages
        if m.payload["tq"] not in ("gnss", "ntp") and m.payload["seq"] > 0
    }
    assert {ep for ep, _ in untrusted} == {anchor_msg.payload["ep"][0] - 1, anchor_msg.payload["ep"][0]}
    redated = {
        (ln["ep"][0], ln["seq"]): ln["tu_redated"] for ln in lines if "tu_redated" in ln and ln["seq"] > 0
    }
    assert set(untrusted) <= set(redated)
    for key, payload in untrusted.items():
        for rec, tu in zip(payload["recs"], redated[key], strict=True):
            assert tu == anchor["tu"] + (rec["tb"] - anchor["tb"])
            assert abs(tu - rec["tu"] - AHEAD_MS) < 5_000  # two hours later than it was stamped
