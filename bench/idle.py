"""CPU% and RSS of a gateway process with 20 devices connected and idle.

    .venv/bin/python -m bench.idle [--seconds S] [--web [--look [N]]]

The devices are serial GNSS receivers on pty pairs that send nothing (a long
silence timeout keeps them open); the broker is connected and quiet.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import tempfile
import threading
import time
import urllib.request
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


def follow(port: int) -> http.client.HTTPConnection:
    """A browser on the page: the page itself, then its live stream (/events), read in a thread."""
    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/events")
    resp = conn.getresponse()

    def drain() -> None:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            while resp.read1(65536):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return conn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--web", action="store_true", help="serve the status page and /metrics (nobody looking at them)"
    )
    ap.add_argument(
        "--look",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="with --web: N browsers (1 without N) follow the page meanwhile",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, mosquitto() as (port, _):
        ptys = [Pty(Path(d) / f"tty{i}") for i in range(DEVICES)]
        devices = "".join(
            gnss_device(p.link, f"gnss{i}", extra="silence_s = 3600.0") for i, p in enumerate(ptys)
        )
        web_port = free_port()
        web = f'[web]\nlisten = "127.0.0.1:{web_port}"\n' if args.web else ""
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
            viewers = [follow(web_port) for _ in range(args.look if args.web else 0)]
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_seconds(pid), time.monotonic()
            for viewer in viewers:
                viewer.close()
            rss = rss_mb(pid)
        finally:
            gw.stop()
            for p in ptys:
                p.unplug()
    pct = (c1 - c0) / (t1 - t0) * 100
    table(
        f"Idle: gateway with {DEVICES} devices connected and silent, broker connected"
        + (", status page served" if args.web else "")
        + (f" and followed by {args.look} browser(s)" if args.web and args.look else ""),
        [
            ("measured over", f"{t1 - t0:.0f} s"),
            ("CPU (of one core)", f"{pct:.2f} %"),
            ("RSS", f"{rss:.1f} MB"),
        ],
    )
    name = "idle_web" if args.web else "idle"
    if args.web and args.look:
        name = "idle_web_looked_at" + (f"_by_{args.look}" if args.look > 1 else "")
    result(name, cpu_pct=pct, rss_mb=rss)


if __name__ == "__main__":
    main()
