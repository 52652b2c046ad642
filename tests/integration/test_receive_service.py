"""`gridedge receive` as deployed: two instances share the fleet's stream through an MQTT 5
shared subscription on a real mosquitto, into a real PostgreSQL; one is SIGKILLed in the
middle and started again. Every signed message ends as exactly one row (what the killed
instance held unacknowledged comes again and is kept once), and both instances took
their share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import cbor2
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from floor.envelope import Signer, load_private_key
from tests.integration.test_receive_store import payload
from tests.support.broker import Mosquitto
from tests.support.gateway import REPO, write_keypair
from tests.support.postgres import Postgres, postgres

PREFIX = "gridedge/v1"


@pytest.fixture
def pg() -> Iterator[Postgres]:
    with postgres() as server:
        yield server


def gridedge(*args: str, out: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
    )


def count(pg: Postgres) -> int:
    with psycopg.connect(pg.dsn) as c:
        row = c.execute("SELECT count(*) FROM messages").fetchone()
    return int(row[0]) if row else 0


def wait_for_log(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in {path}: {path.read_text()[-2000:]}")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_instances_share_the_stream_and_a_killed_one_loses_nothing(  # noqa: C901 (one story, told in order)
    broker: Mosquitto, pg: Postgres, tmp_path: Path
) -> None:
    gws = {}
    for name in ("gw-a", "gw-b"):
        key, pubkey = write_keypair(tmp_path / name)
        gws[name] = Signer(load_private_key(key.read_bytes()))
        assert (
            gridedge("receive", "register", "--dsn", pg.dsn, "--gw", name, "--pubkey", str(pubkey)).wait(30)
            == 0
        )

    def instance(cid: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{cid}.log"
        with open(log, "ab") as out:
            proc = gridedge(
                "receive", "run", "--dsn", pg.dsn, "--host", "127.0.0.1", "--port", str(broker.port),
                "--client-id", cid, "--group", "fleet", out=out,
            )  # fmt: skip
        wait_for_log(log, "subscribed")
        return proc, log

    r1, log1 = instance("receiver-1")
    r2, log2 = instance("receiver-2")
    pub = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"fleet-{uuid.uuid4().hex[:6]}"
    )
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    n = 300
    try:
        for seq in range(1, n + 1):
            for name, signer in gws.items():
                kind = "sos.alarm" if seq % 50 == 0 else "gnss.fix"
                data = signer.sign_bytes(cbor2.dumps(payload(name, seq, kind)))
                pub.publish(f"{PREFIX}/{name}/up/{kind}", data, qos=1).wait_for_publish(10)
            if seq == n // 3:
                r1.send_signal(signal.SIGKILL)  # mid-stream, whatever it held unacknowledged
                r1.wait(10)
            if seq == 2 * n // 3:
                r1, log1 = instance("receiver-1")  # the same client id: its session again
        # a redelivery from the gateway's side (its retry after a lost PUBACK): still one row
        again = gws["gw-a"].sign_bytes(cbor2.dumps(payload("gw-a", 7)))
        pub.publish(f"{PREFIX}/gw-a/up/gnss.fix", again, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 60
        while count(pg) < 2 * n and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # anything more would show now
    finally:
        pub.loop_stop()
        pub.disconnect()
        for p in (r1, r2):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
    with psycopg.connect(pg.dsn) as c:
        per_gw: dict[str, int] = dict(c.execute("SELECT gw, count(*) FROM messages GROUP BY gw").fetchall())
        seqs = {gw: {s for (s,) in c.execute("SELECT seq FROM messages WHERE gw = %s", (gw,))} for gw in gws}
        gaps = c.execute("SELECT count(*) FROM gaps").fetchone()
    assert per_gw == {"gw-a": n, "gw-b": n}
    assert all(s == set(range(1, n + 1)) for s in seqs.values())
    assert gaps == (0,)
    assert "subscribed" in log2.read_text() and "subscribed" in log1.read_text()
