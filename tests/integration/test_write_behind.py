"""The SD card sees only what waits: on a healthy link the broker's PUBACK comes before a
message's commit is due, so it is never written; when the PUBACK does not come, the
message is on disk by then, and a kill costs at most the young ones, reported."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.collector import Collector, assert_no_seq_reused, dropped_seqs
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import Feeder, GatewayProc, gnss_device
from tests.support.pty import Pty

COMMIT_MS = 1000
BATCH_MS = 100


def boottime_ms() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


def rig(tmp_path: Path, port: int) -> tuple[Pty, GatewayProc, Feeder]:
    """A gateway with a GNSS receiver at 20 Hz, reaching the broker on `port`."""
    pty = Pty(tmp_path / "ttyGNSS")
    gw = GatewayProc(
        tmp_path / "gw",
        port=port,
        devices=gnss_device(pty.link),
        outbox=f"batch_ms = {BATCH_MS}\ncommit_ms = {COMMIT_MS}",
    )
    return pty, gw, Feeder(pty, period=0.05)


def flowing(gw: GatewayProc, feeder: Feeder, col: Collector) -> None:
    gw.start()
    gw.wait_device_open("gnss0")
    feeder.start()
    col.wait_more(10, timeout=30)


def test_telemetry_acknowledged_in_time_is_never_written(broker: Mosquitto, tmp_path: Path) -> None:
    pty, gw, feeder = rig(tmp_path, broker.port)
    col = Collector(broker.port, gw.pub).start()
    try:
        flowing(gw, feeder, col)
        before = gw.wait_status(lambda d: d["link"]["state"] == "up")["outbox"]
        col.wait_more(40, timeout=30)  # four seconds of fixes: each well past its commit time
        time.sleep(COMMIT_MS / 1000 + 0.5)
        after = gw.status()["outbox"]
    finally:
        feeder.stop()
        gw.stop()
        col.stop()
        pty.unplug()
    assert not col.invalid
    published = after["published_unsaved"] - before["published_unsaved"]
    assert published >= 40
    # every one of them was acknowledged before it was due, and nothing was written
    assert after["acked_unsaved"] - before["acked_unsaved"] >= published - after["unsaved"]
    assert after["committed"] == before["committed"]
    assert after["saved_late"] == 0


def test_unacknowledged_messages_are_on_disk_when_due_and_a_kill_costs_only_the_young(
    broker: Mosquitto, tmp_path: Path
) -> None:
    proxy = FaultProxy(broker.port).start()
    pty, gw, feeder = rig(tmp_path, proxy.port)
    col = Collector(broker.port, gw.pub).start()
    try:
        flowing(gw, feeder, col)
        # The link goes silent without closing: published messages get no PUBACK.
        proxy.set_mode("blackhole")
        silent_from = boottime_ms()
        time.sleep(3.0)
        doc = gw.status()
        assert doc["link"]["state"] == "up"  # the gateway does not know yet
        assert doc["outbox"]["saved_late"] > 0 and doc["outbox"]["depth"] > 0  # on disk when due
        killed_at = boottime_ms()
        gw.kill(signal.SIGKILL)
        proxy.set_mode("pass")
        proxy.cut()
        gw.start()
        hw = int(
            gw.wait_status(lambda d: d["link"]["state"] == "up" and d["outbox"]["depth"] == 0, timeout=60)[
                "outbox"
            ]["hw"]
        )
        feeder.stop()
        msgs = col.wait_for(
            lambda ms: set(range(1, hw + 1)) <= {m.payload["seq"] for m in ms} | dropped_seqs(ms), timeout=30
        )
    finally:
        feeder.stop()
        gw.stop()
        col.stop()
        proxy.stop()
        pty.unplug()
    assert not col.invalid
    assert_no_seq_reused(msgs)
    fixes = {m.payload["seq"]: m for m in msgs if m.payload["kind"] == "gnss.fix"}
    reported = dropped_seqs(msgs, "unsaved")
    lost = reported - {m.payload["seq"] for m in msgs}
    assert lost, "the kill caught messages published and not yet written: they are reported"
    assert dropped_seqs(msgs) == reported  # nothing else was dropped
    # What was made in the silence and was older than commit_ms at the kill arrived after
    # the restart, from the disk...
    made_in_silence = [m for m in fixes.values() if silent_from <= m.payload["recs"][0]["tb"]]
    old_enough = killed_at - COMMIT_MS - BATCH_MS - 500
    assert [m for m in made_in_silence if m.payload["recs"][0]["tb"] < old_enough]
    # ...and a message lost is younger than that: the last one before it that arrived was
    # made less than commit_ms (and its batch window) before the kill.
    for seq in lost:
        before = max((s for s in fixes if s < seq), default=None)
        assert before is not None and fixes[before].payload["recs"][-1]["tb"] >= old_enough, (seq, before)
