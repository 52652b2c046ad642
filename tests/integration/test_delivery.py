"""Nothing committed is lost: broker restarts, gateway SIGKILLs, birth and Last Will."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.collector import Collector, assert_no_seq_reused, dropped_seqs
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import Feeder, GatewayProc, gnss_device, start_verifier
from tests.support.pty import Pty
from tests.support.wiretap import WireTap

# mosquitto's persistence is a snapshot taken after changes, not a log written before the
# PUBACK: a SIGKILL can lose a message it acknowledged moments before and had not yet
# passed on to every subscriber (seen: one the collector got 0.3 ms before the kill and
# the verifier never did). The gateway cannot recover that (it has deleted the row, as
# MQTT allows); the test excuses only messages acknowledged this close to a kill.
SNAPSHOT_RISK_S = 1.0


def at_risk(tap: WireTap, kills: list[float]) -> set[int]:
    # a PUBACK the dying broker sent may pass the proxy just after the kill was recorded
    return set().union(*(tap.acked_between(k - SNAPSHOT_RISK_S, k + 0.25) for k in kills))


def ack_times(tap: WireTap, kills: list[float]) -> str:
    return f"kills at {kills}; acks: {[(a.seq, a.conn, round(a.at, 3)) for a in tap.acks]}"


def drained(gw: GatewayProc, timeout: float = 60.0) -> int:
    """Wait until the gateway's outbox is empty; return its high-water seq."""
    doc = gw.wait_status(lambda d: d["outbox"]["depth"] == 0 and d["link"]["state"] == "up", timeout)
    return int(doc["outbox"]["hw"])


def test_broker_killed_and_restarted_mid_stream(broker: Mosquitto, tmp_path: Path) -> None:
    pty = Pty(tmp_path / "ttyGNSS")
    tap = WireTap()
    proxy = FaultProxy(broker.port, tap=tap).start()  # only watches: what the broker acknowledged
    gw = GatewayProc(tmp_path / "gw", port=proxy.port, devices=gnss_device(pty.link))
    col = Collector(broker.port, gw.pub).start()
    verifier = start_verifier(
        broker.port, gw.pub, "--timeout", "120", "--client-id", "verify-under-test", "--until-idle", "3"
    )
    gw.start()
    feeder = Feeder(pty)
    kills: list[float] = []
    try:
        gw.wait_device_open("gnss0")
        feeder.start()
        for _ in range(3):
            col.wait_for(lambda ms: len(ms) > 10, timeout=30)
            # hung first, so the kill finds messages on the wire that were never acknowledged
            broker.pause()
            time.sleep(0.3)
            kills.append(time.monotonic())
            broker.kill()
            time.sleep(0.5)  # the gateway keeps committing while the broker is away
            gw.wait_status(lambda d: d["link"]["failures"] >= 1)  # and says it cannot reach it
            broker.start()
            col.wait_more(5, timeout=30)  # and traffic flows again
        feeder.stop()
        hw = drained(gw)
        # The gateway's promise, read off the wire: it let go of a row only when the broker
        # had acknowledged it, so every seq it committed was acknowledged.
        assert set(range(1, hw + 1)) <= tap.acked(), sorted(set(range(1, hw + 1)) - tap.acked())[:20]
        lost_by_broker = at_risk(tap, kills)
        col.wait_for(
            lambda ms: set(range(1, hw + 1)) - lost_by_broker <= {m.payload["seq"] for m in ms}, timeout=30
        )
    finally:
        feeder.stop()
        gw.stop()
        col.stop()
        proxy.stop()
        pty.unplug()
    out, _ = verifier.communicate(timeout=150)
    assert not col.invalid
    assert_no_seq_reused(col.up())
    assert hw > 30
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["summary"] and summary["invalid"] == 0
    gw_summary = summary["gateways"][gw.gw_id]
    # What the subscribers lack, only a SIGKILLed broker may have lost (see `at_risk`).
    assert set(gw_summary["missing_seqs"]) <= lost_by_broker, (gw_summary, ack_times(tap, kills))
    assert set(range(1, hw + 1)) - col.seqs() <= lost_by_broker, ack_times(tap, kills)
    assert gw_summary["messages"] >= hw - len(lost_by_broker)


def test_gateway_sigkilled_at_random_moments(broker: Mosquitto, tmp_path: Path) -> None:
    rng = random.Random(20261126)
    pty = Pty(tmp_path / "ttyGNSS")
    gw = GatewayProc(tmp_path / "gw", port=broker.port, devices=gnss_device(pty.link))
    col = Collector(broker.port, gw.pub).start()
    feeder = Feeder(pty).start()
    kills = 5
    try:
        for _ in range(kills):
            gw.start()
            gw.wait_device_open("gnss0")
            time.sleep(rng.uniform(0.2, 1.2))
            gw.kill()
        gw.start()
        gw.wait_device_open("gnss0")
        time.sleep(0.5)
        feeder.stop()
        hw = drained(gw)
        # Published before it was written (write-behind), a message a kill caught without
        # its PUBACK is lost, and the next start says which seqs that may have been.
        msgs = col.wait_for(
            lambda ms: set(range(1, hw + 1)) <= {m.payload["seq"] for m in ms} | dropped_seqs(ms), timeout=30
        )
    finally:
        feeder.stop()
        gw.stop()
        col.stop()
        pty.unplug()
    assert not col.invalid
    assert_no_seq_reused(msgs)
    up = [m for m in msgs if m.payload["seq"]]
    # seqs are reported only as possibly lost to a kill, and only below the next start's
    reports = [r["d"] for m in col.up("outbox.dropped") for r in m.payload["recs"]]
    assert {d["reason"] for d in reports} <= {"unsaved"}
    assert max(m.payload["seq"] for m in up) == hw
    # Each start is a new epoch: counter increments, nonce is fresh.
    births = [
        m
        for m in msgs
        if m.payload["kind"] == "gateway.status" and m.payload["recs"][0]["d"]["state"] == "online"
    ]
    counters = sorted({m.payload["ep"][0] for m in births})
    assert counters == list(range(1, kills + 2))
    assert len({m.payload["ep"][1] for m in births}) == kills + 1
    # Seqs increase with the epoch: a later start never reuses an earlier start's seq range.
    first_by_epoch: dict[int, int] = {}
    for m in up:
        c = m.payload["ep"][0]
        first_by_epoch[c] = min(first_by_epoch.get(c, m.payload["seq"]), m.payload["seq"])
    ordered = [first_by_epoch[c] for c in sorted(first_by_epoch)]
    assert ordered == sorted(ordered)


def test_birth_is_retained_and_last_will_is_signed_offline(broker: Mosquitto, tmp_path: Path) -> None:
    gw = GatewayProc(tmp_path / "gw", port=broker.port)
    gw.start()
    try:
        gw.wait_status(lambda d: d["link"]["state"] == "up")
        late = Collector(broker.port, gw.pub).start()  # subscribes after the birth
        births = late.wait_for(lambda ms: any(m.payload["kind"] == "gateway.status" for m in ms), timeout=10)
        (birth,) = [m for m in births if m.payload["kind"] == "gateway.status"]
        assert birth.retain and birth.topic == f"gridedge/v1/{gw.gw_id}/status"
        assert birth.payload["seq"] == 0 and birth.payload["recs"][0]["d"]["state"] == "online"
        assert isinstance(birth.payload["recs"][0]["d"]["hw"], int)
        gw.kill()  # no DISCONNECT: the broker publishes the Last Will
        msgs = late.wait_for(
            lambda ms: any(m.payload["recs"][0]["d"].get("state") == "offline" for m in ms), timeout=10
        )
        will = next(m for m in msgs if m.payload["recs"][0]["d"].get("state") == "offline")
        assert will.payload["kind"] == "gateway.status" and will.payload["ep"] == birth.payload["ep"]
        late.stop()
    finally:
        gw.stop()
    assert not late.invalid
