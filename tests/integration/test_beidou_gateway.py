"""A harbour station with a BeiDou command terminal, as deployed: a boat beyond AIS
range heard only by BeiDou is counted in the recall (and a boat heard by neither is
listed unheard), the platform replaces the card table by a signed command, and a
worker's SOS pressed when both the broker and the SMS network are gone reaches the
platform's card by BeiDou, signed by the gateway's key."""

from __future__ import annotations

import os
import time
import tty
from pathlib import Path
from typing import Any

import pytest

from drivers.beidou.sim import PtyTerminal, SimTerminal
from drivers.modem.sim import PtyModem, SimModem
from floor.compact import read_short, short_to_sign
from floor.envelope import load_public_key
from tests.integration.test_wearables import wait_rec
from tests.support.beidou_reader import sends
from tests.support.broker import Mosquitto
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc
from tests.support.platform import Platform
from tests.support.wearables import SimProc, button, devices_toml

GW = "gw-bd-1"
PLATFORM = "0243561"
BOAT, HOME_BOAT = "300112", "300113"


class Station:
    """The gateway, its BeiDou command terminal and its modem on ptys, a button, the platform."""

    def __init__(self, broker: Mosquitto, tmp_path: Path) -> None:
        self.broker = broker
        self.fds: list[int] = []
        bd_port, m_port = self._pty(), self._pty()
        self.terminal = PtyTerminal(self.fds[0], SimTerminal(interval_s=3, level=4)).start()
        self.modem = SimModem(registered=False, cmti_every=0)  # beyond the coast's cell coverage
        self.modem_server = PtyModem(self.fds[2], self.modem).start()
        buttons = [button("btn-1", 1, "w-1")]
        self.sim = SimProc(tmp_path / "sim", buttons)
        self.platform = Platform(tmp_path / "platform", broker.port)
        extra = (
            f'[trust]\ncommand_key = "{self.platform.pub_path}"\n'
            + self.sim.ble_config()
            + f'[sms]\nport = "{m_port}"\nnumbers = ["+8613800138000"]\ntimeout_s = 5\n'
            + f'[beidou]\ndevice = "bd"\nplatform_card = "{PLATFORM}"\nlevel = 4\n'
            + "[alarms]\nfailover_s = 2.0\n"
            + "[ais]\noutside_min_interval_s = 0.0\n"
            + '[[geofences]]\nid = "harbour"\nfleet = [412000001, 412000002, 412000003]\n'
            + "polygon = [[21.0, 112.0], [21.0, 113.0], [22.0, 113.0], [22.0, 112.0]]\n"
        )
        cards = f'cards = {{ "{BOAT}" = 412000001 }}\n'
        devices = (
            devices_toml(buttons) + f'[[devices]]\nid = "bd"\nkind = "beidou"\nport = "{bd_port}"\n{cards}'
        )
        self.gw = GatewayProc(tmp_path / "gw", port=broker.port, gw_id=GW, devices=devices, extra=extra)
        self.col = Collector(broker.port, self.gw.pub).start()

    def _pty(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)
        self.fds += [master, slave]
        return os.ttyname(slave)

    def command(self, type_: str, args: dict[str, Any]) -> dict[str, Any]:
        cid, data = self.platform.command(GW, type_, args)
        self.platform.send(GW, data)
        return wait_rec(self.col, "cmd.result", lambda d: d["id"] == cid)

    def outside(self) -> dict[int, dict[str, Any]]:
        """The latest recall list, by MMSI."""
        msgs = self.col.in_seq_order("vessels.outside")
        return {v["mmsi"]: v for v in msgs[-1].payload["recs"][0]["d"]["vessels"]} if msgs else {}

    def wait_state(self, mmsi: int, state: str) -> dict[int, dict[str, Any]]:
        self.col.wait_for(lambda _ms: self.outside().get(mmsi, {}).get("state") == state, timeout=20)
        return self.outside()

    def stop(self) -> None:
        self.gw.kill()
        if self.broker.proc is None:
            self.broker.start()
        self.sim.stop()
        self.col.stop()
        self.platform.stop()
        self.terminal.stop()
        self.modem_server.stop()
        for fd in self.fds:
            os.close(fd)


def recall_by_beidou(st: Station) -> None:
    st.terminal.inject(SimTerminal.report(BOAT, 20.5, 112.5))  # at sea, beyond AIS range
    wait_rec(st.col, "beidou.position", lambda d: d["card"] == BOAT and d["mmsi"] == 412000001)
    listed = st.wait_state(412000001, "outside")
    assert listed[412000001]["via"] == "beidou" and listed[412000001]["lat"] == 20.5
    assert listed[412000002]["state"] == "unheard" and listed[412000003]["state"] == "unheard"
    # the platform tells the station which boat another card is on: its reports count from now on
    res = st.command("beidou.cards", {"device": "bd", "cards": {BOAT: 412000001, HOME_BOAT: 412000002}})
    assert res["ok"] and res["cards"] == 2
    assert st.command("beidou.cards", {"device": "ais9", "cards": {}})["error"] == "unknown_device"
    assert st.command("beidou.cards", {"device": "bd", "cards": {"x": 1}})["error"] == "bad_args"
    st.terminal.inject(SimTerminal.report(HOME_BOAT, 20.6, 112.6))
    assert st.wait_state(412000002, "outside")[412000003]["state"] == "unheard"  # reported by neither
    st.terminal.inject(SimTerminal.message(BOAT, "求救 SOS 船进水"))
    distress = wait_rec(st.col, "beidou.distress")
    assert distress["mmsi"] == 412000001 and distress["card"] == BOAT


def sos_by_beidou(st: Station) -> None:
    assert st.sim.call("connected", device="btn-1", timeout=30)["connected"]
    st.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-1"]["state"] == "connected", 30)
    bd = st.terminal.terminal
    before = len(bd.sent)
    st.broker.kill()  # the broker is gone, and there is no cell network either
    st.sim.call("press", device="btn-1", type="long")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sos = [
            t
            for t in bd.sent[before:]
            if t.card == PLATFORM and read_short(t.content)[0]["kind"] == "sos.alarm"
        ]
        if sos:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no SOS by BeiDou: {bd.sent}")
    assert not st.modem.sent  # the modem had no network: BeiDou carried it
    said, body, sig = read_short(sos[0].content)
    assert said["who"] == "btn-1" and sig is not None
    load_public_key(st.gw.pub.read_bytes()).verify(sig, short_to_sign(body))


@pytest.mark.slow
def test_typhoon_day_at_a_harbour_station(broker: Mosquitto, tmp_path: Path) -> None:
    st = Station(broker, tmp_path)
    st.gw.start()
    try:
        st.gw.wait_status(lambda d: d["bearers"]["beidou"]["state"] == "ready", 30)
        recall_by_beidou(st)
        sos_by_beidou(st)
    finally:
        st.stop()
    assert st.terminal.terminal.early == 0  # the card's interval held throughout
    assert {s.card for s in sends(bytes(st.terminal.terminal.raw))} == {PLATFORM}
