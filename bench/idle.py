"""CPU% and RSS of a gateway process with 20 devices connected and idle.

    .venv/bin/python -m bench.idle [--seconds S]

The devices are serial GNSS receivers on pty pairs that send nothing (a long
silence timeout keeps them open); the broker is connected and quiet.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import result, table
from bench.harness import mosquitto
from tests.support.broker import free_port
from tests.support.gateway import GatewayProc, gnss_device
from tests.support.pty import Pty

DEVICES = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--web", action="store_true", help="serve the status page and /metrics (nobody looking at them)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, mosquitto() as (port, _):
        ptys = [Pty(Path(d) / f"tty{i}") for i in range(DEVICES)]
        devices = "".join(
            gnss_device(p.link, f"gnss{i}", extra="silence_s = 3600.0") for i, p in enumerate(ptys)
        )
        web = f'[web]\nlisten = "127.0.0.1:{free_port()}"\n' if args.web else ""
        gw = GatewayProc(Path(d) / "gw", port=port, devices=devices, extra=web)
        gw.start()
        try:
            gw.wait_status(
                lambda s: s["link"]["state"] == "up" and all(v["opened"] >= 1 for v in s["devices"].values()),
                timeout=30,
            )
            time.sleep(3)  # let start-up work settle
            assert gw.proc is not None
            pid = gw.proc.pid
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_seconds(pid), time.monotonic()
            rss = rss_mb(pid)
        finally:
            gw.stop()
            for p in ptys:
                p.unplug()
    pct = (c1 - c0) / (t1 - t0) * 100
    table(
        f"Idle: gateway with {DEVICES} devices connected and silent, broker connected"
        + (", status page served" if args.web else ""),
        [
            ("measured over", f"{t1 - t0:.0f} s"),
            ("CPU (of one core)", f"{pct:.2f} %"),
            ("RSS", f"{rss:.1f} MB"),
        ],
    )
    result("idle_web" if args.web else "idle", cpu_pct=pct, rss_mb=rss)


if __name__ == "__main__":
    main()
