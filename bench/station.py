"""A maritime station's steady traffic: CPU, memory and SD-card writes per record kept.

    .venv/bin/python -m bench.station [--rates 15,150,1500] [--seconds 30] [--no-gpsd] [--outage]

The gateway runs as deployed (a process, no debug logging) with a real mosquitto; two AIS
receivers get a real capture (the AIS logs of ../shared/corpora, else the project's own
few sentences) as UDP datagrams at a steady rate, a quarter of them heard by both; a
GNSS receiver on a pty sends one epoch a second. Each pass of the capture gets new
MMSIs, so the traffic is a harbour's, not a replay the dedup window swallows. gpsd
(`gpsd -N -n udp://...`) gets the same datagrams in the same run, as the native baseline.

Measured over a window after a warm-up: the gateway's CPU (utime+stime of the process),
RSS, `write_bytes` of /proc/PID/io (what reached the block layer: the SD card's wear),
per record kept (records the subscriber received and verified) and per day, and beside
it the whole disk's writes over the same window (/proc/diskstats of the device holding
the gateway's state: journald, the filesystem's journal, the broker and whatever else
runs on the machine are in it too); cold start (process start to the first signed
message on the broker) with an empty outbox and with a 1,000,000-message backlog.
`--outage` stops the broker after the warm-up, so the window measures an outage: every
record goes to the outbox (records counted by the gateway's status, `records`). One
line per rate:

    RESULT station rate=150 outage=0 cpu_pct=... gpsd_cpu_pct=... rss_mb=...
           write_bytes_per_record=... disk_write_bytes_per_record=... gb_per_day=...
           cold_start_s=... backlog_cold_start_s=...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyais

from bench.common import result, table
from bench.harness import free_port, mosquitto
from bench.idle import cpu_seconds, rss_mb
from tests.support.collector import Collector
from tests.support.gateway import GatewayProc, gnss_device
from tests.support.pty import Pty

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
CAPTURES = (
    "gpsd/test/sample.aivdm",
    "gpsd/test/daemon/ais-18-27.log",
    "gpsd/test/daemon/ais-nmea-type6-fid55.log",
    "gpsd/test/daemon/ais-nmea.log",
    "libais/test/data/test.aivdm",
)
OWN = (  # the project's own, when the corpora are absent
    b"!AIVDM,1,1,,A,15M67FC000G?ufbE`FepT@3n00Sa,0*5C",
    b"!AIVDM,1,1,,B,15MwkRPP00G?ujvE`D?@0?vN0<0C,0*76",
    b"!AIVDM,1,1,,A,15N4cJ`005Jrek0H@9n`DW5608EP,0*13",
)
WARMUP_S = 5.0
BACKLOG = 1_000_000


def capture() -> list[dict[str, Any]]:
    """The capture's single-sentence position and static reports, decoded (so each pass can
    be re-encoded with new MMSIs)."""
    lines: list[bytes] = []
    for rel in CAPTURES:
        path = CORPORA / rel
        if path.exists():
            lines += [ln.strip() for ln in path.read_bytes().splitlines() if b"VDM," in ln]
    if not lines:
        lines = list(OWN)
    msgs = []
    for ln in lines:
        start = ln.find(b"!")
        if start < 0 or not ln[start:].startswith((b"!AIVDM,1,1", b"!BSVDM,1,1", b"!ABVDM,1,1")):
            continue
        with contextlib.suppress(Exception):  # the capture's deliberately broken examples
            d = pyais.decode(ln[start:]).asdict()
            if d.get("msg_type") in (1, 2, 3, 18, 19, 27) and d.get("mmsi"):
                msgs.append(d)
    return msgs


def passes(msgs: list[dict[str, Any]], n: int) -> list[list[bytes]]:
    """n passes of the capture, each with its own MMSIs (beacon prefixes 970-974 avoided)."""
    out = []
    for k in range(n):
        sentences = []
        for d in msgs:
            mmsi = 200_000_000 + (int(d["mmsi"]) + 7919 * k) % 700_000_000
            fields = {key: v for key, v in d.items() if v is not None} | {"mmsi": mmsi}
            with contextlib.suppress(Exception):
                for s in pyais.encode_dict(fields, talker_id="AI", sentence_type="VDM"):
                    sentences.append(s.encode() + b"\r\n")
        out.append(sentences)
    return out


class Sender(threading.Thread):
    """Datagrams at a steady rate: alternately to each receiver, a quarter to both, and
    every one to gpsd."""

    def __init__(
        self, rate: float, stream: list[list[bytes]], ports: tuple[int, int], gpsd: int | None
    ) -> None:
        super().__init__(daemon=True)
        self.rate, self.stream, self.ports, self.gpsd = rate, stream, ports, gpsd
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.monotonic()
        i = 0
        while not self.stop.is_set():
            for sentences in self.stream:
                for s in sentences:
                    if self.stop.is_set():
                        return
                    due = t0 + i / self.rate
                    if (wait := due - time.monotonic()) > 0:
                        time.sleep(wait)
                    tx.sendto(s, ("127.0.0.1", self.ports[i % 2]))
                    if i % 4 == 0:
                        tx.sendto(s, ("127.0.0.1", self.ports[(i + 1) % 2]))
                    if self.gpsd is not None:
                        tx.sendto(s, ("127.0.0.1", self.gpsd))
                    i += 1
                    self.sent = i


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def disk_written(path: Path) -> int:
    """Bytes written to the whole block device holding `path` (/proc/diskstats, field 10
    is sectors of 512 bytes whatever the device's own sector size); 0 if it is not listed."""
    dev = path.stat().st_dev
    want = (os.major(dev), os.minor(dev))
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if len(f) > 9 and (int(f[0]), int(f[1])) == want:
            return int(f[9]) * 512
    return 0


def records(col: Collector) -> int:
    return sum(len(m.payload["recs"]) for m in col.up())


@contextlib.contextmanager
def gpsd_on(port: int) -> Iterator[subprocess.Popen[bytes] | None]:
    exe = shutil.which("gpsd") or "/usr/sbin/gpsd"
    if not Path(exe).exists():
        yield None
        return
    proc = subprocess.Popen(
        [exe, "-N", "-n", "-S", str(free_port()), f"udp://127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


PROFILER = """
import atexit, cProfile, os
_profile = cProfile.Profile()
_profile.enable()
atexit.register(lambda: (_profile.disable(), _profile.dump_stats(os.environ["GRIDEDGE_PROFILE_OUT"])))
"""


def gateway(
    work: Path, port: int, ais_ports: tuple[int, int], gnss: Pty, profile: Path | None = None
) -> GatewayProc:
    devices = (
        f'[[devices]]\nid = "ais-north"\nkind = "ais"\nurl = "udp://127.0.0.1:{ais_ports[0]}"\n\n'
        f'[[devices]]\nid = "ais-south"\nkind = "ais"\nurl = "udp://127.0.0.1:{ais_ports[1]}"\n\n'
        + gnss_device(gnss.link, "gnss-mast", min_interval_s=1.0)
    )
    env = {}
    if profile is not None:  # the gateway's main thread under cProfile, written when it stops
        hook = work / "profile-hook"
        hook.mkdir(parents=True, exist_ok=True)
        (hook / "sitecustomize.py").write_text(PROFILER)
        env = {"PYTHONPATH": str(hook), "GRIDEDGE_PROFILE_OUT": str(profile)}
    # the shipped defaults: batch_ms 250, the station's shaping (config/maritime-station.toml)
    return GatewayProc(work, port=port, devices=devices, outbox="batch_ms = 250", verbose=False, env=env)


def first_message_s(gw: GatewayProc, col: Collector) -> float:
    """Start the gateway; seconds from process start to its first signed message arriving."""
    t0 = time.monotonic()
    gw.start()
    msgs = col.wait_for(bool, timeout=60)
    return msgs[0].arrived - t0


def fill_backlog(state: Path, n: int) -> None:
    """An outbox holding n telemetry messages of a real one's size, written straight into
    SQLite (signing a million would take minutes; a start reads no signature back). The
    gateway drains them as gnss.fix, which the collector takes unverified."""
    from edge.outbox.model import SCHEMA

    state.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state / "outbox.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    body = bytes(200)
    with conn:
        conn.executemany(
            "INSERT INTO msgs (seq, prio, kind, src, tb, body, at)"
            " VALUES (?, 2, 'gnss.fix', 'backlog', ?, ?, 0)",
            ((i, i, body) for i in range(1, n + 1)),
        )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def cold_start_with_backlog(work: Path, port: int) -> float:
    gw = GatewayProc(work, port=port, outbox="batch_ms = 250", verbose=False)
    fill_backlog(gw.state, BACKLOG)
    col = Collector(port, gw.pub, unverified_kinds=frozenset({"gnss.fix"})).start()
    try:
        return first_message_s(gw, col)
    finally:
        gw.stop()
        col.stop()


def one_rate(
    rate: float,
    seconds: float,
    stream: list[list[bytes]],
    use_gpsd: bool,
    *,
    profile: Path | None = None,
    outage: bool = False,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d, mosquitto() as (port, broker):
        work = Path(d)
        ais_ports = (free_port(), free_port())
        gpsd_port = free_port()
        pty = Pty(work / "ttyGNSS")
        gw = gateway(work / "gw", port, ais_ports, pty, profile)
        col = Collector(port, gw.pub).start()
        from tests.support.gateway import Feeder

        feeder = Feeder(pty, period=1.0)
        with gpsd_on(gpsd_port) if use_gpsd else contextlib.nullcontext() as gpsd:
            try:
                cold = first_message_s(gw, col)
                gw.wait_device_open("ais-north")
                gw.wait_device_open("ais-south")
                feeder.start()
                sender = Sender(rate, stream, ais_ports, gpsd_port if gpsd is not None else None)
                sender.start()
                time.sleep(WARMUP_S)
                if outage:  # the link dies: what the gateway makes from now on waits on disk
                    broker.terminate()
                    broker.wait(10)
                    gw.wait_status(lambda doc: doc["link"]["state"] != "up")
                    time.sleep(1.0)

                # records kept: verified by the subscriber, or (in an outage) counted by the gateway
                def kept_now() -> int:
                    return int(gw.status()["records"]) if outage else records(col)

                assert gw.proc is not None
                pid = gw.proc.pid
                c0, w0, r0, s0 = cpu_seconds(pid), write_bytes(pid), kept_now(), sender.sent
                had_gpsd = gpsd is not None
                g0 = cpu_seconds(gpsd.pid) if gpsd is not None else 0.0
                k0 = disk_written(work)
                t0 = time.monotonic()
                time.sleep(seconds)
                c1, w1, r1, s1 = cpu_seconds(pid), write_bytes(pid), kept_now(), sender.sent
                g1 = cpu_seconds(gpsd.pid) if gpsd is not None else 0.0
                k1 = disk_written(work)
                t1 = time.monotonic()
                rss = rss_mb(pid)
                sender.stop.set()
                feeder.stop()
                assert not col.invalid, f"{len(col.invalid)} messages failed verification"
            finally:
                gw.stop()
                col.stop()
                pty.unplug()
    span = t1 - t0
    kept = max(1, r1 - r0)
    return {
        "rate": rate,
        "sent_per_s": (s1 - s0) / span,
        "records_per_s": (r1 - r0) / span,
        "cpu_pct": (c1 - c0) / span * 100,
        # nan: not measured (--no-gpsd, or no gpsd installed: apt-get install gpsd)
        "gpsd_cpu_pct": (g1 - g0) / span * 100 if had_gpsd else float("nan"),
        "rss_mb": rss,
        "write_bytes_per_s": (w1 - w0) / span,
        "write_bytes_per_record": (w1 - w0) / kept,
        "disk_write_bytes_per_s": (k1 - k0) / span,
        "disk_write_bytes_per_record": (k1 - k0) / kept,
        "gb_per_day": (w1 - w0) / span * 86400 / 1e9,
        "cpu_us_per_record": (c1 - c0) / kept * 1e6,
        "cold_start_s": cold,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="15,150,1500", help="AIS sentences/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window per rate")
    ap.add_argument("--no-gpsd", action="store_true")
    ap.add_argument("--no-backlog", action="store_true", help="skip the cold start over a 1 M backlog")
    ap.add_argument("--outage", action="store_true", help="stop the broker for the measured window")
    ap.add_argument("--profile", type=Path, help="cProfile the gateway (main thread) into this file")
    args = ap.parse_args()
    msgs = capture()
    stream = passes(msgs, 12)
    rows = []
    figures = []
    for rate in (float(r) for r in args.rates.split(",")):
        f = one_rate(rate, args.seconds, stream, not args.no_gpsd, profile=args.profile, outage=args.outage)
        figures.append(f)
        rows.append(
            (
                f"{rate:g} sentences/s",
                f"cpu {f['cpu_pct']:.2f} % (gpsd {f['gpsd_cpu_pct']:.2f} %), rss {f['rss_mb']:.1f} MB, "
                f"{f['records_per_s']:.1f} records/s kept, {f['write_bytes_per_record']:.0f} B written "
                f"per record ({f['gb_per_day']:.2f} GB/day; the whole disk "
                f"{f['disk_write_bytes_per_record']:.0f} B), {f['cpu_us_per_record']:.0f} us CPU per record, "
                f"cold start {f['cold_start_s']:.2f} s",
            )
        )
    backlog_cold = float("nan")
    if not args.no_backlog:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as d, mosquitto() as (port, _):
            backlog_cold = cold_start_with_backlog(Path(d) / "gw", port)
        rows.append((f"cold start over {BACKLOG:,} messages", f"{backlog_cold:.2f} s"))
    during = ", broker stopped (an outage)" if args.outage else ""
    table(f"Station: {len(msgs)} AIS reports x 12 passes over UDP, 2 receivers, GNSS at 1 Hz{during}", rows)
    if args.profile is not None and args.profile.exists():
        import pstats

        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)
    for f in figures:
        result(
            "station",
            rate=f["rate"],
            outage=int(args.outage),
            cpu_pct=f["cpu_pct"],
            gpsd_cpu_pct=f["gpsd_cpu_pct"],
            rss_mb=f["rss_mb"],
            records_per_s=f["records_per_s"],
            write_bytes_per_record=f["write_bytes_per_record"],
            disk_write_bytes_per_record=f["disk_write_bytes_per_record"],
            gb_per_day=f["gb_per_day"],
            cpu_us_per_record=f["cpu_us_per_record"],
            cold_start_s=f["cold_start_s"],
            backlog_cold_start_s=backlog_cold,
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
