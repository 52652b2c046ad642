"""A gateway with a worker's SOS button and an SMS modem, its uplink through a fault
proxy: how long from a press to the first SMS the modem is asked to send, whatever way
the link fails. The failover test and bench/failover.py both drive it."""

from __future__ import annotations

import json
import os
import signal
import time
import tty
from collections.abc import Callable
from pathlib import Path

from drivers.modem.sim import PtyModem, SimModem
from tests.support.broker import Mosquitto
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import GatewayProc
from tests.support.wearables import SimProc, button, devices_toml

FAILOVER_S = 2.0
NUMBER = "+8613800138000"
MODES = ("cut", "blackhole", "no_puback", "unreachable_at_start", "restarted_in_outage")


class FailoverRig:
    def __init__(self, broker: Mosquitto, workdir: Path) -> None:
        self.broker = broker
        self.proxy = FaultProxy(broker.port).start()
        master, slave = os.openpty()
        tty.setraw(slave)
        self._pty = (master, slave)
        self.modem = SimModem(cmti_every=0)
        self.server = PtyModem(master, self.modem).start()
        self.buttons = [button("btn-1", 1, "w-1")]
        self.sim = SimProc(workdir / "sim", self.buttons)
        extra = (
            self.sim.ble_config()
            + f'[sms]\nport = "{os.ttyname(slave)}"\nnumbers = {json.dumps([NUMBER])}\ntimeout_s = 5\n'
            + f"[alarms]\nfailover_s = {FAILOVER_S}\n"
        )
        # the keepalive stays the default (30 s): the failover must not wait for it
        self.gw = GatewayProc(
            workdir / "gw",
            port=self.proxy.port,
            devices=devices_toml(self.buttons),
            extra=extra,
            mqtt_extra="reconnect_min_s = 0.2\nreconnect_max_s = 2.0",
        )

    def start(self, *, up: bool = True) -> None:
        self.gw.start()
        if up:
            self.gw.wait_status(lambda d: d["link"]["state"] == "up", 30)
        self.gw.wait_status(lambda d: d["bearers"]["sms"]["state"] == "ready", 30)
        assert self.sim.call("connected", device="btn-1", timeout=30)["connected"]
        self.gw.wait_status(lambda d: d["ble"]["wearables"]["btn-1"]["state"] == "connected", 30)

    def fail(self, mode: str) -> None:
        """Make the uplink fail as `mode` says (after start, except for the two that
        fail before it)."""
        if mode == "cut":
            self.proxy.set_mode("refuse")
            self.proxy.cut()
        elif mode == "blackhole":
            self.proxy.set_mode("blackhole")
        elif mode == "no_puback":
            self.proxy.set_mode("mute")
            self.proxy.cut()  # the session starts again, into a broker that never answers
        elif mode == "restarted_in_outage":
            self.proxy.set_mode("blackhole")
            self.gw.kill(signal.SIGKILL)
            self.start(up=False)

    def press_to_bearer(self, timeout: float = 30.0) -> float:
        """Press SOS; seconds until the modem is asked to send (AT+CMGS). What an earlier
        press sent (its second part) is let finish first, so it is not counted as this one's."""
        before, settled = self._cmgs(), time.monotonic()
        while time.monotonic() - settled < 0.5:
            time.sleep(0.05)
            if (now := self._cmgs()) != before:
                before, settled = now, time.monotonic()
        pressed = time.monotonic()
        self.sim.call("press", device="btn-1", type="long")
        deadline = pressed + timeout
        while time.monotonic() < deadline:
            if self._cmgs() > before:
                return time.monotonic() - pressed
            time.sleep(0.005)
        raise TimeoutError(f"no SMS within {timeout:.0f} s of the press")

    def _cmgs(self) -> int:
        return sum(c.startswith("AT+CMGS") for c in list(self.modem.commands))

    def stop(self) -> None:
        self.gw.kill()
        self.sim.stop()
        self.proxy.stop()
        self.server.stop()
        for fd in self._pty:
            os.close(fd)


def measure(
    broker: Mosquitto, workdir: Path, mode: str, presses: int = 1, on: Callable[[float], None] = print
) -> list[float]:
    """Press-to-bearer seconds, `presses` times, with the uplink failed as `mode`."""
    rig = FailoverRig(broker, workdir)
    try:
        if mode == "unreachable_at_start":
            rig.proxy.set_mode("refuse")
            rig.start(up=False)
        else:
            rig.start()
            rig.fail(mode)
        out = []
        for _ in range(presses):
            out.append(rig.press_to_bearer())
            on(out[-1])
        return out
    finally:
        rig.stop()
