"""A maritime station's steady traffic: CPU, memory and SD-card writes per record kept.

    .venv/bin/python -m bench.station [--rates 15,150,1500] [--seconds 30] [--no-gpsd] [--outage]
                                      [--py-spy FILE]

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
`--py-spy FILE` samples the gateway with py-spy over the window (only samples holding the
GIL: Python at work, not waiting in epoll or in SQLite, Ed25519 or a syscall without it)
and prints where that time goes, by function, itself and with what it calls. `--outage`
stops the broker after the warm-up, so the window measures an outage: every record goes
to the outbox (records counted by the gateway's status, `records`). One line per rate:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyais

from bench.common import result, table
from bench.harness import free_port, mosquitto
from bench.idle import CLK_TCK, cpu_seconds, rss_mb
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


def spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling `pid` for `seconds` into `out` (raw: one folded stack a line)."""
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy is not installed (pip install py-spy): no profile")
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw"]
    return subprocess.Popen(
        [*cmd, "--rate", "1000", "--gil", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def spied(path: Path, top: int = 25) -> list[tuple[str, str]]:
    """Share of the samples per function: itself (the innermost frame) and inclusive."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")"
            for f in stack.split(";")
            if " (" in f
        ]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    total = max(total, 1)
    rows = [
        (f"{100 * n / total:5.1f} % self", f) for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]
    ]
    rows += [
        (f"{100 * n / total:5.1f} % with callees", f)
        for f, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]
    ]
    return rows


def threads(pid: int) -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of the event loop's thread (`main`) and of the others
    (the SQLite threads, executors): Python does not name its threads for the kernel."""
    out: dict[str, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            rest = (task / "stat").read_text().rpartition(")")[2]
            name = "main" if task.name == str(pid) else "others"
            f = rest.split()
            u, s = out.get(name, (0.0, 0.0))
            out[name] = (u + int(f[11]) / CLK_TCK, s + int(f[12]) / CLK_TCK)
    return out


def by_thread(t0: dict[str, tuple[float, float]], t1: dict[str, tuple[float, float]], span: float) -> str:
    parts = []
    for name, (u1, s1) in sorted(t1.items(), key=lambda kv: -sum(kv[1])):
        u0, s0 = t0.get(name, (0.0, 0.0))
        if (u1 - u0) + (s1 - s0) > 0:
            parts.append(f"{name} {100 * (u1 - u0) / span:.2f}+{100 * (s1 - s0) / span:.2f}")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Sample:
    """The counters at one moment of the measured window."""

    at: float
    cpu: float
    gpsd: float
    wrote: int  # the gateway's write_bytes
    disk: int  # the whole disk's
    kept: int
    sent: int
    threads: dict[str, tuple[float, float]]

    @classmethod
    def take(cls, pid: int, gpsd: int | None, work: Path, kept: int, sent: int) -> Sample:
        return cls(
            time.monotonic(),
            cpu_seconds(pid),
            cpu_seconds(gpsd) if gpsd is not None else 0.0,
            write_bytes(pid),
            disk_written(work),
            kept,
            sent,
            threads(pid),
        )


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
    py_spy: Path | None = None,
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
                gpsd_pid = None if gpsd is None else gpsd.pid
                a = Sample.take(pid, gpsd_pid, work, kept_now(), sender.sent)
                spying = spy(pid, seconds, py_spy) if py_spy is not None else None
                time.sleep(seconds)
                if spying is not None:
                    spying.wait(30)
                b = Sample.take(pid, gpsd_pid, work, kept_now(), sender.sent)
                rss = rss_mb(pid)
                sender.stop.set()
                feeder.stop()
                assert not col.invalid, f"{len(col.invalid)} messages failed verification"
            finally:
                gw.stop()
                col.stop()
                pty.unplug()
    span = b.at - a.at
    kept = max(1, b.kept - a.kept)
    wrote, disk, cpu = b.wrote - a.wrote, b.disk - a.disk, b.cpu - a.cpu
    return {
        "rate": rate,
        "sent_per_s": (b.sent - a.sent) / span,
        "records_per_s": (b.kept - a.kept) / span,
        "cpu_pct": cpu / span * 100,
        # nan: not measured (--no-gpsd, or no gpsd installed: apt-get install gpsd)
        "gpsd_cpu_pct": (b.gpsd - a.gpsd) / span * 100 if gpsd_pid is not None else float("nan"),
        "rss_mb": rss,
        "write_bytes_per_s": wrote / span,
        "write_bytes_per_record": wrote / kept,
        "disk_write_bytes_per_s": disk / span,
        "disk_write_bytes_per_record": disk / kept,
        "gb_per_day": wrote / span * 86400 / 1e9,
        "cpu_us_per_record": cpu / kept * 1e6,
        "cold_start_s": cold,
        "threads": by_thread(a.threads, b.threads, span),  # type: ignore[dict-item]
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="15,150,1500", help="AIS sentences/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window per rate")
    ap.add_argument("--no-gpsd", action="store_true")
    ap.add_argument("--no-backlog", action="store_true", help="skip the cold start over a 1 M backlog")
    ap.add_argument("--outage", action="store_true", help="stop the broker for the measured window")
    ap.add_argument("--py-spy", type=Path, help="sample the gateway with py-spy into this file (raw)")
    ap.add_argument("--profile", type=Path, help="cProfile the gateway (main thread) into this file")
    args = ap.parse_args()
    msgs = capture()
    stream = passes(msgs, 12)
    rows = []
    figures = []
    for rate in (float(r) for r in args.rates.split(",")):
        f = one_rate(
            rate,
            args.seconds,
            stream,
            not args.no_gpsd,
            profile=args.profile,
            outage=args.outage,
            py_spy=args.py_spy,
        )
        figures.append(f)
        rows.append(
            (
                f"{rate:g} sentences/s",
                f"cpu {f['cpu_pct']:.2f} % (gpsd {f['gpsd_cpu_pct']:.2f} %), rss {f['rss_mb']:.1f} MB, "
                f"{f['records_per_s']:.1f} records/s kept, {f['write_bytes_per_record']:.0f} B written "
                f"per record ({f['gb_per_day']:.2f} GB/day; the whole disk "
                f"{f['disk_write_bytes_per_record']:.0f} B), {f['cpu_us_per_record']:.0f} us CPU per record, "
                f"cold start {f['cold_start_s']:.2f} s; CPU % by thread (user+system): {f['threads']}",
            )
        )
    backlog_cold = float("nan")
    if not args.no_backlog:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as d, mosquitto() as (port, _):
            backlog_cold = cold_start_with_backlog(Path(d) / "gw", port)
        rows.append((f"cold start over {BACKLOG:,} messages", f"{backlog_cold:.2f} s"))
    during = ", broker stopped (an outage)" if args.outage else ""
    table(f"Station: {len(msgs)} AIS reports x 12 passes over UDP, 2 receivers, GNSS at 1 Hz{during}", rows)
    if args.py_spy is not None and args.py_spy.exists():
        table("Where the gateway's Python time goes (py-spy, samples holding the GIL)", spied(args.py_spy))
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
