"""SOS press-to-broker latency through a real gateway process, idle and under telemetry load.

A simulated SOS button (bumble, real GATT) in this process, reached by the gateway
over HCI; the gateway (`gridedge run`, a subprocess) commits each alarm (fsync),
answers the button and publishes; a subscriber here stamps the alarm's arrival at the
broker's far side. Latency = arrival - press, both on this process's monotonic clock.
Phases: 1,000 presses with the gateway idle, 1,000 with 2,000 GNSS records/s flowing
through it (a pty), and the bare paho-mqtt QoS 1 publish latency to the same broker
in the same run (publish to PUBACK, and publish to arrival at the same subscriber).

    python -m bench.sos_latency [--presses 1000] [--load-rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

import cbor2
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import result, table
from bench.harness import mosquitto
from drivers.ble.profiles import SosEventType
from drivers.ble.sim.peripherals import SimAir, SimSosButton
from drivers.gnss.sim import walk
from floor.envelope import private_pem
from floor.fsutil import write_private

REPO = Path(__file__).resolve().parents[1]


class Arrivals:
    """A subscriber that stamps each sos.alarm (by counter) and each bare message (by id)."""

    def __init__(self, port: int) -> None:
        self.alarms: dict[int, float] = {}
        self.bare: dict[int, float] = {}
        self.cond = threading.Condition()
        c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-sub")
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.subscribe([("gridedge/v1/+/up/sos.alarm", 1), ("bench/bare", 1)])
        c.loop_start()
        self.client = c

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        with self.cond:
            if msg.topic == "bench/bare":
                self.bare[int.from_bytes(msg.payload[:4], "big")] = now
            else:
                body = cbor2.loads(cbor2.loads(msg.payload).value[2])
                self.alarms.setdefault(body["recs"][0]["d"]["counter"], now)
            self.cond.notify_all()

    def wait(self, table_: dict[int, float], key: int, timeout: float = 30.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in table_, timeout):
                raise TimeoutError(f"message {key} did not arrive")
            return table_[key]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Load:
    """GNSS epochs into a pty at a fixed rate (a fast receiver feeding the gateway)."""

    def __init__(self, rate: int) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.rate = rate
        self.on = threading.Event()
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        epochs = walk(start_utc=time.time(), hz=self.rate)
        tick = 0.01
        per_tick = max(1, int(self.rate * tick))
        next_t = time.monotonic()
        while not self.stop.is_set():
            if self.on.is_set():
                os.write(self.master, b"".join(next(epochs) for _ in range(per_tick)))
                self.sent += per_tick
            next_t += tick
            time.sleep(max(0.0, next_t - time.monotonic()))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def presses(button: SimSosButton, sub: Arrivals, n: int) -> list[float]:
    out = []
    for _ in range(n):
        pressed = time.monotonic()
        counter, answered = button.press(SosEventType.LONG_PRESS)
        arrived = await asyncio.to_thread(sub.wait, sub.alarms, counter)
        await asyncio.wait_for(answered, 30)
        out.append((arrived - pressed) * 1000)
        await asyncio.sleep(0.01)
    return out


def bare(port: int, sub: Arrivals, n: int) -> tuple[list[float], list[float]]:
    acked: dict[int, float] = {}
    cond = threading.Condition()

    def on_publish(_c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        with cond:
            acked[mid] = time.monotonic()
            cond.notify_all()

    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    to_ack, to_arrival = [], []
    body = os.urandom(300)
    try:
        for i in range(n):
            t0 = time.monotonic()
            info = c.publish("bench/bare", i.to_bytes(4, "big") + body, qos=1)
            with cond:
                cond.wait_for(lambda: info.mid in acked, 10)  # noqa: B023
            to_ack.append((acked[info.mid] - t0) * 1000)
            to_arrival.append((sub.wait(sub.bare, i) - t0) * 1000)
            time.sleep(0.002)
    finally:
        c.disconnect()
        c.loop_stop()
    return to_ack, to_arrival


async def run(n: int, rate: int) -> None:
    with mosquitto() as (port, _broker), tempfile.TemporaryDirectory(prefix="bench-sos-") as d:
        wd = Path(d)
        write_private(wd / "gateway.key", private_pem(Ed25519PrivateKey.generate()))
        air = SimAir()
        hci = await air.serve_hci()
        key = secrets.token_bytes(16)  # its events are authenticated, as in the field
        button = await air.add(SimSosButton("sos-1", "F0:00:00:00:00:01", key=key))
        load = Load(rate)
        (wd / "gateway.toml").write_text(
            f'[gateway]\nid = "bench-gw"\nkey = "gateway.key"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n\n[outbox]\nbatch_ms = 250\n\n'
            f'[[devices]]\nid = "gnss0"\nkind = "gnss"\nport = "{os.ttyname(load.slave)}"\n'
            "baudrate = 115200\nmin_interval_s = 0.0\n\n"
            '[[devices]]\nid = "sos-1"\nkind = "sos_button"\nworker = "w-1"\n'
            f'address = "F0:00:00:00:00:01"\nkey = "{key.hex()}"\n\n[ble]\nbackend = "sim"\n'
            f'[ble.options]\nhci = "tcp-client:127.0.0.1:{hci}"\n'
        )
        sub = Arrivals(port)
        gw = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "-c",
            str(wd / "gateway.toml"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )
        try:
            if not await button.wait_connected(30):
                raise RuntimeError(
                    f"the gateway did not connect the button:\n{(wd / 'gateway.log').read_text()}"
                )
            await asyncio.sleep(1.0)
            await presses(button, sub, 20)  # warm-up
            idle = await presses(button, sub, n)
            load.on.set()
            await asyncio.sleep(2.0)
            sent0 = load.sent
            t0 = time.monotonic()
            loaded = await presses(button, sub, n)
            load_rate = (load.sent - sent0) / (time.monotonic() - t0)
            load.on.clear()
            await asyncio.sleep(1.0)
            to_ack, to_arrival = await asyncio.to_thread(bare, port, sub, n)
        finally:
            load.stop.set()
            gw.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gw.wait(), 10)
            sub.stop()
            await air.close()
    rows = []
    for name, xs in (
        ("SOS press -> broker, idle", idle),
        (f"SOS press -> broker, {load_rate:,.0f} fixes/s", loaded),
        ("bare QoS 1 publish -> PUBACK", to_ack),
        ("bare QoS 1 publish -> subscriber", to_arrival),
    ):
        figures = f"p50 {statistics.median(xs):6.2f}  p99 {pct(xs, 0.99):6.2f}  max {max(xs):7.2f} ms"
        rows.append((name, f"{figures}  n={len(xs)}"))
    table("sos_latency", rows)
    result(
        "sos_latency",
        idle_p50_ms=statistics.median(idle),
        idle_p99_ms=pct(idle, 0.99),
        load_p99_ms=pct(loaded, 0.99),
        load_max_ms=max(loaded),
        bare_p99_ms=pct(to_arrival, 0.99),
        bare_puback_p99_ms=pct(to_ack, 0.99),
        load_records_per_s=load_rate,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presses", type=int, default=1000)
    ap.add_argument("--load-rate", type=int, default=2000, help="GNSS fixes per second during the load phase")
    args = ap.parse_args()
    asyncio.run(run(args.presses, args.load_rate))


if __name__ == "__main__":
    main()
