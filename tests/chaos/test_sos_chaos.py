"""Workers press SOS at random while the gateway is SIGKILLed and the broker restarted and paused.

Invariant: every press the button saw answered "received" (the alarm was on the
gateway's disk) arrives at the platform, signed, exactly once; every press at all
is answered in the end (a button resends until it is); a stranger's button raises
nothing.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Mosquitto
from tests.support.collector import Collector, assert_no_seq_reused
from tests.support.gateway import GatewayProc
from tests.support.wearables import SimProc, button, devices_toml

CHAOS_S = 30.0


def _fault(action: str, rng: random.Random, broker: Mosquitto, gw: GatewayProc) -> None:
    if action == "kill_gw":
        time.sleep(rng.uniform(0.0, 0.05))  # sometimes mid-commit of the last press
        gw.kill(signal.SIGKILL)
        time.sleep(rng.uniform(0.1, 1.0))
        gw.start()
    elif action == "restart_broker":
        broker.kill(signal.SIGTERM)
        time.sleep(rng.uniform(0.2, 1.5))
        broker.start()
    else:
        broker.pause()
        time.sleep(rng.uniform(0.5, 2.0))
        broker.resume()


def _answered(sim: SimProc, pressed: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """The presses whose button no longer resends them: it heard the gateway's answer."""
    state = sim.call("state")["wearables"]
    return {(dev, counter) for dev, counter in pressed if counter not in state[dev]["pending"]}


@pytest.mark.slow
def test_sos_presses_under_kills_and_broker_restarts(broker: Mosquitto, tmp_path: Path) -> None:
    rng = random.Random(20261126)
    buttons = [button(f"btn-{i}", i, f"w-{i}") for i in range(3)]
    stranger = {**button("stranger", 200), "stranger": True}
    sim = SimProc(tmp_path / "sim", [*buttons, stranger])
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        extra=sim.ble_config(),
        devices=devices_toml(buttons),
        mqtt_extra="reconnect_min_s = 0.05\nreconnect_max_s = 0.5\nkeepalive_s = 5",
    )
    col = Collector(broker.port, gw.pub).start()
    pressed: list[tuple[str, int]] = []
    answered: set[tuple[str, int]] = set()
    actions: list[str] = []
    gw.start()
    try:
        for b in buttons:
            assert sim.call("connected", device=b["id"], timeout=20)["connected"]
        deadline = time.monotonic() + CHAOS_S
        while time.monotonic() < deadline:
            action = rng.choice(
                ["press", "press", "press", "press", "kill_gw", "restart_broker", "pause_broker"]
            )
            actions.append(action)
            if action == "press":
                dev = rng.choice(buttons)["id"]
                pressed.append((dev, sim.call("press", device=dev, type="long")["counter"]))
                if rng.random() < 0.3:
                    sim.call("press", device="stranger", type="long")
            else:
                _fault(action, rng, broker, gw)
            # what the buttons know right now: the presses answered so far
            answered |= _answered(sim, pressed)
            time.sleep(rng.uniform(0.05, 0.4))
        broker.resume()
        if broker.proc is None:
            broker.start()
        # every press is answered in the end: the buttons resend until the gateway has them
        for dev, counter in pressed:
            sim.call("wait", device=dev, counter=counter, timeout=60)
        msgs = col.wait_for(
            lambda ms: (
                set(pressed)
                <= {
                    (r["d"]["device"], r["d"]["counter"])
                    for m in ms
                    if m.topic.endswith("/sos.alarm")
                    for r in m.payload["recs"]
                }
            ),
            timeout=90,
        )
    finally:
        gw.stop()
        sim.stop()
        col.stop()
    _one_alarm_per_press(col, msgs, pressed, answered)
    print(
        f"sos chaos: {len(pressed)} presses ({len(answered)} seen answered during the storm), "
        f"{gw.starts} gateway starts, actions {dict((a, actions.count(a)) for a in set(actions))}"
    )


def _one_alarm_per_press(
    col: Collector, msgs: list[Any], pressed: list[tuple[str, int]], answered: set[tuple[str, int]]
) -> None:
    assert not col.invalid
    assert_no_seq_reused(msgs)
    alarms = [m.payload for m in msgs if m.topic.endswith("/sos.alarm")]
    assert all(a["prio"] == 0 and len(a["recs"]) == 1 for a in alarms)
    by_press: dict[tuple[str, int], set[tuple[int, bytes, int]]] = {}
    for a in alarms:
        d = a["recs"][0]["d"]
        by_press.setdefault((d["device"], d["counter"]), set()).add((a["ep"][0], a["ep"][1], a["seq"]))
    assert set(by_press) == set(pressed)  # nothing lost, nothing invented (no stranger)
    twice = {k: v for k, v in by_press.items() if len(v) > 1}
    assert not twice, f"presses raised more than one alarm: {twice}"
    assert answered <= set(by_press)
