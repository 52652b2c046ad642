"""In-process gateway pieces and a private broker for the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.ingest import Epoch, Ingest
from edge.outbox import Limits, Outbox
from edge.publisher import Publisher
from floor.clock import Clock
from floor.config import MqttConfig, OutboxConfig
from floor.envelope import Signer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def mosquitto(port: int | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A private, non-persistent mosquitto on a free port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = port or free_port()
    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "m.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            "set_tcp_nodelay true\n"  # the broker configuration docs/operations.md recommends
        )
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.02)
        try:
            yield port, proc
        finally:
            proc.terminate()
            proc.wait(10)


def bare_qos1_rate(port: int, n: int, payload: bytes, inflight: int = 64) -> float:
    """paho-mqtt alone: n QoS 1 publishes with the same in-flight window; messages/s."""
    done = 0
    all_acked = threading.Event()

    def on_publish(_c: object, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal done
        done += 1
        if done >= n:
            all_acked.set()

    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    start = time.perf_counter()
    for _ in range(n):
        c.publish("bench/bare", payload, qos=1)
    all_acked.wait(600)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return n / elapsed


@dataclass
class Pipeline:
    outbox: Outbox
    ingest: Ingest
    publisher: Publisher


@contextlib.asynccontextmanager
async def pipeline(
    state: Path,
    port: int,
    *,
    batch_ms: int,
    max_bytes: int = 2 * 1024**3,
    inflight: int = 64,
    backlog_queue_ms: float = 5.0,  # the gateway's default ([mqtt] backlog_queue_ms)
    commit_ms: int = OutboxConfig().commit_ms,  # the gateway's default ([outbox] commit_ms)
) -> AsyncIterator[Pipeline]:
    """Outbox + ingest + publisher, running, as the gateway wires them."""
    limits = Limits(max_bytes=max_bytes, group_commit_s=commit_ms / 1000)
    async with Outbox(state / "outbox.sqlite", limits=limits) as outbox:
        ingest = Ingest(
            gw="bench-gw",
            epoch=Epoch(1, os.urandom(8)),
            signer=Signer(Ed25519PrivateKey.generate()),
            outbox=outbox,
            clock=Clock(synced=True),
            batch_ms=batch_ms,
        )
        mqtt = MqttConfig(
            port=port,
            inflight=inflight,
            backlog_queue_ms=backlog_queue_ms,
            reconnect_min_s=0.05,
            reconnect_max_s=0.2,
        )
        publisher = Publisher(mqtt=mqtt, gw="bench-gw", outbox=outbox, ingest=ingest)
        # live rows go straight to the publisher, written only if unacknowledged when due,
        # as the gateway wires them
        outbox.attach(publisher)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(outbox.run()), tg.create_task(publisher.run())]
            try:
                yield Pipeline(outbox, ingest, publisher)
            finally:
                for t in tasks:
                    t.cancel()


async def drained_below(p: Pipeline, rows: int, prio: int = 2) -> None:
    """Poll (the benchmark observes from outside) until the lane holds at most `rows`."""
    while p.outbox.depth(prio) > rows:  # noqa: ASYNC110 (an observer, not a consumer)
        await asyncio.sleep(0.05)


async def wait_drained(p: Pipeline, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while p.outbox.depth() > 0 or p.outbox.writer.queue or p.outbox.writer.acks:
        if time.monotonic() > deadline:
            raise TimeoutError("outbox did not drain")
        await asyncio.sleep(0.01)


async def wait_delivered(p: Pipeline, timeout: float = 3600) -> None:
    """Until the broker has acknowledged every message given a seq, written or not
    (deleting the written ones is the outbox's business afterwards: it may let a few
    deletes wait to share a commit)."""
    deadline = time.monotonic() + timeout
    while p.outbox.writer.queue or p.publisher.acked < p.outbox.hw:
        if time.monotonic() > deadline:
            raise TimeoutError("outbox did not deliver")
        await asyncio.sleep(0.01)


def disk_bytes(state: Path) -> int:
    return sum(f.stat().st_size for f in state.glob("outbox.sqlite*") if not f.name.endswith(".reserve"))
