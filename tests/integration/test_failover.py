"""An SOS gets out however the uplink fails: a clean cut, a black hole (no FIN, no RST:
the keepalive is left at 30 s, so only the alarm's own missing PUBACK can tell), a broker
that takes messages and never acknowledges them, a broker unreachable from the start, a
gateway restarted in the middle of an outage. Each time, from the press to the first
SMS the modem is asked to send: failover_s and a few seconds, never a keepalive later."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_wearables import wait_rec
from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.failover import FAILOVER_S, MODES, FailoverRig, measure


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_press_to_the_first_sms_whatever_the_link_does(broker: Mosquitto, tmp_path: Path, mode: str) -> None:
    (seconds,) = measure(broker, tmp_path, mode)
    print(f"{mode}: press to AT+CMGS {seconds:.2f} s")
    assert seconds <= FAILOVER_S + 3.0


@pytest.mark.slow
def test_a_black_hole_is_known_by_the_alarm_not_a_keepalive_later(broker: Mosquitto, tmp_path: Path) -> None:
    """The alarm is the probe: no PUBACK in failover_s and the link is taken for dead (the
    status says so, and the gateway reconnects), though the keepalive is 30 s."""
    rig = FailoverRig(broker, tmp_path)
    try:
        rig.start()
        rig.fail("blackhole")
        rig.press_to_bearer()
        doc = rig.gw.wait_status(lambda d: d["link"]["state"] != "up", timeout=FAILOVER_S + 3)
        assert "no PUBACK for an alarm" in doc["link"]["last_error"] or doc["link"]["state"] == "connecting"
        rig.proxy.set_mode("pass")  # the link comes back: the MQTT copy goes, the platform keeps one
        rig.gw.wait_status(lambda d: d["link"]["state"] == "up" and not d["outbox"]["lanes"]["0"]["rows"], 30)
    finally:
        rig.stop()


@pytest.mark.slow
def test_a_sim_out_of_credit_is_told_to_the_platform(broker: Mosquitto, tmp_path: Path) -> None:
    """The SMS centre refuses every SMS (+CMS ERROR: 21, a prepaid SIM out of credit): the
    bearer is `failing` with cause `no_credit`, and the platform hears it (`bearer.state`)
    as soon as the uplink lets it, not on the day an alarm needs the SIM."""
    rig = FailoverRig(broker, tmp_path)
    col = Collector(broker.port, rig.gw.pub).start()
    try:
        rig.start()
        wait_rec(col, "bearer.state", lambda d: d["bearer"] == "sms" and d["state"] == "ready", timeout=20)
        rig.modem.fail_code, rig.modem.fail_sends = 21, 1000
        rig.fail("no_puback")  # the broker never acknowledges: the alarm goes to the SMS bearer
        rig.sim.call("press", device="btn-1", type="long")
        doc = rig.gw.wait_status(lambda d: d["bearers"]["sms"]["cause"] == "no_credit", 20)
        assert doc["bearers"]["sms"]["state"] == "failing"
        rig.proxy.set_mode("pass")
        rig.proxy.cut()
        rec = wait_rec(col, "bearer.state", lambda d: d.get("cause") == "no_credit", timeout=30)
        assert rec["state"] == "failing" and rec["errors"]["cms_error"] >= 1
    finally:
        col.stop()
        rig.stop()
