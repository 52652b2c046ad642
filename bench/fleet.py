"""A fleet into the platform: simulated gateways, each with its own key, at one signed
message a second each, through a real mosquitto (MQTT 5 shared subscriptions, sessions
kept across its restart) into a real PostgreSQL, by `gridedge receive` instances. Midway
one instance is SIGKILLed and started again, later the broker is restarted.

    .venv/bin/python -m bench.fleet [--gateways 3000] [--seconds 300] [--instances 2]

Printed: messages/s sustained, publish-to-row latency p50/p99 (life-safety apart), CPU
microseconds per message for the receivers and for the database, and the check: signed
messages missing, duplicate rows, rows from no registered gateway (all must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import result, table  # noqa: E402
from bench.harness import free_port  # noqa: E402

PREFIX = "gridedge/v1"
TICK = os.sysconf("SC_CLK_TCK")


class Broker:
    """mosquitto that keeps its sessions on disk, so a restart loses none."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            # as root mosquitto would drop to its own user, which cannot write the persistence
            # directory: sessions, and the messages queued for them, would not outlive a restart
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            "max_inflight_messages 0\nset_tcp_nodelay true\n"
            f"persistence true\npersistence_location {workdir}/\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # saves the sessions
            self.proc.wait(30)
            self.proc = None


def message(gw: str, seq: int, now_ms: int) -> tuple[str, dict[str, Any]]:
    """A gateway's message as it sends them: mostly GNSS batches, some AIS, batteries, a
    rare SOS. `tu` is the publish time, so the row's arrival gives the latency."""
    if (seq * 7 + int(gw.removeprefix("gw-"))) % 600 == 0:  # each gateway about once in 10 min
        kind, prio = "sos.alarm", 0
        d: dict[str, Any] = {"device": "sos-w1", "worker": "w-1", "counter": seq, "event": "long_press"}
        d["fix"] = {"lat": 21.9, "lon": 112.8, "alt": 5.0, "sats": 11, "hdop": 0.8, "age_ms": 400}
        recs = [{"tb": seq, "tu": now_ms, "d": d}]
    elif seq % 7 == 0:
        kind, prio = "ais.position", 2
        recs = [
            {
                "tb": seq,
                "tu": now_ms,
                "d": {"mmsi": 412440000 + i, "lat": 21.9, "lon": 112.8, "sog": 6.1, "cog": 181.0},
            }
            for i in range(3)
        ]
    elif seq % 60 == 1:
        kind, prio = "device.battery", 2
        recs = [{"tb": seq, "tu": now_ms, "d": {"pct": 80, "worker": "w-1"}}]
    else:
        kind, prio = "gnss.fix", 2
        recs = [
            {
                "tb": seq * 1000 + i,
                "tu": now_ms,
                "d": {"lat": 21.9 + i * 1e-5, "lon": 112.8, "fix": 3, "sats": 10, "hdop": 0.9},
            }
            for i in range(4)
        ]
    payload = {
        "v": 1,
        "gw": gw,
        "ep": [1, b"\x01" * 8],
        "seq": seq,
        "kind": kind,
        "src": "gnss0" if kind == "gnss.fix" else "gw",
        "prio": prio,
        "tq": "gnss",
        "recs": recs,
    }
    return kind, payload


def publisher(first: int, count: int, seconds: float, port: int, out: Any) -> None:
    """Gateways [first, first+count): one message each a second, signed with its own key."""
    try:
        out.send(_publish(first, count, seconds, port))
    except BaseException:
        import traceback

        traceback.print_exc()
        out.send((0, 0, []))
        raise


def _publish(first: int, count: int, seconds: float, port: int) -> tuple[int, int, list[tuple[str, int]]]:
    import cbor2
    import paho.mqtt.client as paho
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from paho.mqtt.enums import CallbackAPIVersion

    from floor.envelope import Signer

    keys = {
        f"gw-{i:05d}": Signer(Ed25519PrivateKey.from_private_bytes(i.to_bytes(32, "big")))
        for i in range(first, first + count)
    }
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"fleet-{first}", clean_session=False
    )
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(1, 2)
    waiting: dict[int, tuple[str, int]] = {}  # mid -> (gw, seq) not yet acknowledged by the broker

    def on_publish(_c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        waiting.pop(mid, None)  # a PUBACK (messages published while the broker was away are sent again)

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent, seq, start = 0, 0, time.monotonic()
    while time.monotonic() - start < seconds:
        seq += 1
        tick = start + seq
        now_ms = int(time.time() * 1000)
        for gw, signer in keys.items():
            kind, p = message(gw, seq, now_ms)
            info = client.publish(f"{PREFIX}/{gw}/up/{kind}", signer.sign_bytes(cbor2.dumps(p)), qos=1)
            waiting[info.mid] = (gw, seq)
            sent += 1
        if (pause := tick - time.monotonic()) > 0:
            time.sleep(pause)
    deadline = time.monotonic() + 30
    while waiting and time.monotonic() < deadline:
        time.sleep(0.1)
    client.loop_stop()
    client.disconnect()
    return sent, seq, sorted(waiting.values())[:1000]  # what the broker never acknowledged (a sample)


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICK
    return total


def children(pid: int) -> list[int]:
    out = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
    return out


def _receiver(i: int, dsn: str, port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tools.cli", "receive", "run", "--dsn", dsn, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--client-id", f"receiver-{i}", "--group", "fleet"]
    with open(log_dir / f"receiver-{i}.log", "ab") as log:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


class Fleet:
    """One run: the broker, the database, the receivers, the publishers, the chaos."""

    def __init__(self, gateways: int, seconds: float, instances: int) -> None:
        from tests.support.postgres import Postgres

        self.gateways, self.seconds, self.instances = gateways, seconds, instances
        self.work = Path(tempfile.mkdtemp(prefix="gridedge-fleet-"))
        self.pg = Postgres()
        self.broker = Broker(self.work)
        self.broker.start()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.events: list[str] = []
        self.spent_rx = 0.0  # CPU of receiver processes that were killed
        self.unacked: list[tuple[str, int]] = []  # published, never acknowledged by the broker
        self.final_seq = 0
        self.missing: list[tuple[str, int]] = []

    def register(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from tools.receive.store import Store

        with Store.open(self.pg.dsn) as store, store.conn.transaction():
            for i in range(self.gateways):
                key = Ed25519PrivateKey.from_private_bytes(i.to_bytes(32, "big")).public_key()
                store.register(f"gw-{i:05d}", key)

    def publish(self) -> int:
        """Publishers in two processes; the chaos while they run; the messages published."""
        ctx = mp.get_context("spawn")
        per = -(-self.gateways // 2)
        pipes, pubs = [], []
        for first in range(0, self.gateways, per):
            rx, tx = ctx.Pipe(duplex=False)
            n = min(per, self.gateways - first)
            pr = ctx.Process(target=publisher, args=(first, n, self.seconds, self.broker.port, tx))
            pr.start()
            pipes.append(rx)
            pubs.append(pr)
        t0 = time.monotonic()
        results: dict[int, tuple[int, int, list[tuple[str, int]]]] = {}
        while len(results) < len(pipes):  # read as they come: a child never waits on a full pipe
            self._chaos(time.monotonic() - t0)
            for i, rx in enumerate(pipes):
                if i not in results and rx.poll(0.1):
                    results[i] = rx.recv()
            waiting = [rx for i, rx in enumerate(pipes) if i not in results]
            if not any(p.is_alive() for p in pubs) and not any(rx.poll(0) for rx in waiting):
                break  # a publisher that died without a word
        for pr in pubs:
            pr.join(30)
        results_list = list(results.values())
        self.unacked = [m for r in results_list for m in r[2]]
        self.final_seq = max(r[1] for r in results_list)
        return sum(r[0] for r in results_list)

    def _chaos(self, t: float) -> None:
        step = len(self.events)
        if step == 0 and t >= self.seconds / 3:
            self.spent_rx += cpu_s([self.procs[0].pid])
            self.procs[0].send_signal(signal.SIGKILL)
            self.procs[0].wait()
            self.events.append(f"receiver-0 SIGKILLed at {t:.0f} s")
        elif step == 1 and t >= self.seconds / 3 + 5:
            self.procs[0] = _receiver(0, self.pg.dsn, self.broker.port, self.work)
            self.events.append(f"receiver-0 started again at {t:.0f} s")
        elif step == 2 and t >= 2 * self.seconds / 3:
            self.broker.stop()
            self.broker.start()
            self.events.append(f"broker restarted at {t:.0f} s")

    def run(self) -> dict[str, float]:
        import psycopg

        self.register()
        self.procs = [_receiver(i, self.pg.dsn, self.broker.port, self.work) for i in range(self.instances)]
        time.sleep(3)  # subscribed
        rx0, db0 = cpu_s([p.pid for p in self.procs]), cpu_s(children(self.pg.proc.pid))
        t0 = time.monotonic()
        published = self.publish()
        with psycopg.connect(self.pg.dsn, autocommit=True) as c:
            rows, last_change = 0, time.monotonic()
            # until every message is a row, or nothing more has come for QUIET_S
            while rows < published and time.monotonic() - last_change < QUIET_S:
                time.sleep(0.5)
                now_rows = int(c.execute("SELECT count(*) FROM messages").fetchone()[0])  # type: ignore[index]
                if now_rows != rows:
                    rows, last_change = now_rows, time.monotonic()
            # sustained: from the first row to the last (the rows' own times, not these polls)
            first, last = c.execute("SELECT min(received_at), max(received_at) FROM messages").fetchone()  # type: ignore[misc]
            elapsed = (
                max((last - first).total_seconds(), 1e-3) if first is not None else time.monotonic() - t0
            )
            self.missing = _missing(c, self.gateways, self.final_seq)
            cpu_rx = cpu_s([p.pid for p in self.procs]) - rx0 + self.spent_rx
            cpu_db = cpu_s(children(self.pg.proc.pid)) - db0
            return {"published": published, "rows": rows, "messages_per_s": rows / elapsed} | _figures(
                c, published, rows, cpu_rx, cpu_db
            )

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            if p.poll() is None:
                p.kill()
        self.broker.stop()
        self.pg.stop()
        shutil.rmtree(self.work, ignore_errors=True)


QUIET_S = 60.0


def _missing(c: Any, gateways: int, final: int) -> list[tuple[str, int]]:
    """Every (gw, seq) published and not stored, from the store's own runs: its gaps,
    and what lies outside each epoch's first and last seq (every gateway sent 1..final)."""
    out = [(gw, s) for gw, lo, hi in c.execute("SELECT gw, lo, hi FROM gaps") for s in range(lo, hi + 1)]
    seen = set()
    for gw, first, last in c.execute("SELECT gw, first_seq, last_seq FROM epochs"):
        seen.add(gw)
        out += [(gw, s) for s in (*range(1, first), *range(last + 1, final + 1))]
    out += [
        (f"gw-{i:05d}", s) for i in range(gateways) if f"gw-{i:05d}" not in seen for s in range(1, final + 1)
    ]
    return sorted(out)


LATENCY = (
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),"
    " percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) FROM"
    " (SELECT extract(epoch FROM received_at) * 1000 - (recs->0->>'tu')::bigint AS lat"
    " FROM messages WHERE {where}) x"
)


def _figures(c: Any, published: int, rows: int, cpu_rx: float, cpu_db: float) -> dict[str, float]:
    p50, p99 = c.execute(LATENCY.format(where="true")).fetchone()
    s50, s99 = c.execute(LATENCY.format(where="prio = 0")).fetchone()
    distinct = c.execute("SELECT count(*) FROM (SELECT DISTINCT gw, seq FROM messages) x").fetchone()[0]
    stranger = c.execute(
        "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM gateways g WHERE g.gw = m.gw)"
    ).fetchone()[0]
    return {
        "missing": published - distinct,
        "duplicate_rows": rows - distinct,
        "unverified_rows": stranger,
        "latency_p50_ms": float(p50 or 0),
        "latency_p99_ms": float(p99 or 0),
        "sos_latency_p50_ms": float(s50 or 0),
        "sos_latency_p99_ms": float(s99 or 0),
        "receiver_cpu_us_per_msg": cpu_rx / max(rows, 1) * 1e6,
        "db_cpu_us_per_msg": cpu_db / max(rows, 1) * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--gateways", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--instances", type=int, default=2)
    a = ap.parse_args()
    fleet = Fleet(a.gateways, a.seconds, a.instances)
    try:
        r = fleet.run()
    finally:
        fleet.close()
    for e in fleet.events:
        print(f"  {e}")
    unacked = set(fleet.unacked)
    for gw, seq in fleet.missing[:20]:
        why = "never acknowledged by the broker" if (gw, seq) in unacked else "acknowledged by the broker"
        print(f"  missing: {gw} seq {seq} ({why})")
    r["missing_acknowledged"] = sum(1 for m in fleet.missing if m not in unacked)
    r["unacknowledged_publishes"] = len(unacked)
    title = f"Fleet: {a.gateways} gateways x 1 msg/s for {a.seconds:.0f} s, {a.instances} receivers"
    sustained = (
        f"{r['messages_per_s']:.0f} messages/s ({r['rows']:.0f} rows of {r['published']:.0f} published)"
    )
    check = (
        f"missing {r['missing']:.0f} (acknowledged by the broker {r['missing_acknowledged']:.0f}),"
        f" duplicate rows {r['duplicate_rows']:.0f}"
    )
    table(
        title,
        [
            ("sustained", sustained),
            ("publish to row", f"p50 {r['latency_p50_ms']:.0f} ms, p99 {r['latency_p99_ms']:.0f} ms"),
            ("  life-safety", f"p50 {r['sos_latency_p50_ms']:.0f} ms, p99 {r['sos_latency_p99_ms']:.0f} ms"),
            (
                "CPU per message",
                f"receivers {r['receiver_cpu_us_per_msg']:.0f} us, database {r['db_cpu_us_per_msg']:.0f} us",
            ),
            ("check", f"{check}, unverified rows {r['unverified_rows']:.0f}"),
        ],
    )
    result("fleet", instances=a.instances, **r)
    return 0 if r["missing"] == 0 and r["duplicate_rows"] == 0 and r["unverified_rows"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
