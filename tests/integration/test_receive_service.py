"""`gridedge receive` as deployed: two instances share the fleet's stream through an MQTT 5
shared subscription on a real mosquitto, into a real PostgreSQL; one is SIGKILLed in the
middle and started again. Every signed message ends as exactly one row (what the killed
instance held unacknowledged comes again and is kept once), both instances took their
share, and a gateway that sends nothing but signed junk is quarantined without holding
anyone up."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, ClassVar

import cbor2
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.modem import pdu
from floor import compact
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


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """Each instance asked to stop, killed if it does not."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)


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
def test_two_instances_share_the_stream_and_a_killed_one_loses_nothing(
    broker: Mosquitto, pg: Postgres, tmp_path: Path
) -> None:
    gws = {}
    for name in ("gw-a", "gw-b", "gw-bad"):
        gws[name] = registered(pg, tmp_path, name)

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
                junk = {b"\x00": seq} if name == "gw-bad" else None  # signed, but no consumer can take it
                data = signer.sign_bytes(cbor2.dumps(payload(name, seq, kind, junk)))
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
        stop(r1, r2)
    with psycopg.connect(pg.dsn) as c:
        per_gw: dict[str, int] = dict(c.execute("SELECT gw, count(*) FROM messages GROUP BY gw").fetchall())
        seqs = {gw: {s for (s,) in c.execute("SELECT seq FROM messages WHERE gw = %s", (gw,))} for gw in gws}
        gaps = c.execute("SELECT count(*) FROM gaps").fetchone()
        bad = c.execute("SELECT status, junk, refused FROM gateways WHERE gw = 'gw-bad'").fetchone()
    assert per_gw == {"gw-a": n, "gw-b": n}  # the hostile gateway: not one row, and no one waited for it
    assert seqs["gw-a"] == seqs["gw-b"] == set(range(1, n + 1))
    assert bad is not None and bad[0] == "quarantined" and bad[1] >= 100 and bad[1] + bad[2] >= n
    assert gaps == (0,)
    assert "subscribed" in log2.read_text() and "subscribed" in log1.read_text()


class Hook(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.posts.append((body, self.headers.get("X-Gridedge-Signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def http_port(log: Path) -> int:
    wait_for_log(log, "HTTP on")
    found = re.search(r"HTTP on [0-9.]+:(\d+)", log.read_text())
    assert found is not None
    return int(found.group(1))


def post(port: int, body: object, token: str = "s3cret") -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/sms",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def http_instance(
    pg: Postgres, broker: Mosquitto, tmp_path: Path, cid: str, hook_url: str
) -> tuple[subprocess.Popen[bytes], int]:
    """An instance taking SMS deliveries and posting life-safety rows to a webhook; its port."""
    log = tmp_path / f"{cid}.log"
    with open(log, "ab") as out:
        proc = gridedge(
            "receive", "run", "--dsn", pg.dsn, "--host", "127.0.0.1", "--port", str(broker.port),
            "--client-id", cid, "--group", "fleet", "--http", "127.0.0.1:0",
            "--sms-token-file", str(tmp_path / "token"), "--webhook", hook_url,
            "--webhook-secret-file", str(tmp_path / "hook-secret"), out=out,
        )  # fmt: skip
    port = http_port(log)
    wait_for_log(log, "subscribed")
    return proc, port


def scrape(ports: tuple[int, ...], done: Callable[[str], bool], timeout: float = 20.0) -> str:
    """The instances' /metrics together, once `done` says they show what is expected."""
    deadline = time.monotonic() + timeout
    while True:
        text = ""
        for p in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5) as resp:
                text += resp.read().decode()
        if done(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def registered(pg: Postgres, tmp_path: Path, name: str) -> Signer:
    key, pubkey = write_keypair(tmp_path / name)
    register = gridedge("receive", "register", "--dsn", pg.dsn, "--gw", name, "--pubkey", str(pubkey))
    assert register.wait(30) == 0
    return Signer(load_private_key(key.read_bytes()))


def test_sms_deliveries_the_webhook_and_metrics(broker: Mosquitto, pg: Postgres, tmp_path: Path) -> None:
    """An SMS provider delivers an alarm's parts to two different instances (as a load
    balancer would): it is stored once, when its last part comes, and its MQTT copy later
    is the same row; the life-safety row is posted to the webhook, signed; /metrics counts
    it all; a delivery without the token or with junk is refused with a reason."""
    signer = registered(pg, tmp_path, "gw-a")
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "hook-secret").write_text("hook-key\n")
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hook.server_address[1]}/alarm"
    procs, ports = zip(
        *(http_instance(pg, broker, tmp_path, cid, hook_url) for cid in ("r-1", "r-2")), strict=True
    )
    try:
        alarm = payload(
            "gw-a", 5, "sos.alarm", {"worker": "w-1", "lat": 21.9, "lon": 112.8, "note": "x" * 160}
        )
        whole = signer.sign_bytes(cbor2.dumps(compact.pack(alarm)))
        sender = "+8613800000001"
        parts = [p.user_data for p in pdu.submit(sender, whole, ref=77)]
        assert len(parts) >= 2  # the test means a concatenated SMS
        assert post(ports[0], {"from": sender, "ud": parts[0].hex()}) == (
            200,
            {"ok": True, "outcome": "part"},
        )
        assert post(ports[1], {"from": sender, "ud": parts[0].hex()})[1]["outcome"] == "part_duplicate"
        answers = [post(ports[i % 2], {"from": sender, "ud": p.hex()}) for i, p in enumerate(parts[1:], 1)]
        assert answers[-1] == (
            200,
            {"ok": True, "outcome": "stored"},
        )  # the last part completed it, on the other instance
        assert post(ports[1], {"from": sender, "ud": parts[0].hex()})[0] == 200  # a late resend: harmless
        # the MQTT copy comes once the link is back: the same row
        pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="fleet-sms")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish(
            f"{PREFIX}/gw-a/up/sos.alarm", signer.sign_bytes(cbor2.dumps(alarm)), qos=1
        ).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        assert post(ports[0], {"from": sender, "ud": parts[0].hex()}, token="guess")[0] == 401
        status, answer = post(ports[0], {"from": sender, "ud": "zz"})
        assert status == 400 and answer["error"] == "bad_request"
        assert post(ports[0], {"from": sender, "ud": "00" * 20})[1]["outcome"] not in ("stored", "duplicate")
        metrics = scrape(ports, lambda text: 'outcome="duplicate"' in text and bool(Hook.posts))
    finally:
        hook.shutdown()
        hook.server_close()
        stop(*procs)
    with psycopg.connect(pg.dsn) as c:
        assert c.execute("SELECT seq, bearer FROM messages").fetchall() == [(5, "sms")]
        # the late resend of a part waits, alone, to be dropped with the day's stale parts
        assert c.execute("SELECT count(*) FROM sms_parts").fetchone() == (1,)
    assert len(Hook.posts) == 1
    body, signature = Hook.posts[0]
    assert signature == "sha256=" + hmac.new(b"hook-key", body, hashlib.sha256).hexdigest()
    note = json.loads(body)
    assert (note["gw"], note["seq"], note["kind"], note["bearer"]) == ("gw-a", 5, "sos.alarm", "sms")
    assert note["recs"][0]["d"]["worker"] == "w-1"
    assert 'gridedge_receive_messages_total{outcome="stored"} 1.0' in metrics
    assert 'outcome="duplicate"' in metrics and "gridedge_receive_webhook_posts_total" in metrics


def test_what_a_restarted_mosquitto_drops_from_a_shared_subscription_is_an_open_gap(
    broker: Mosquitto, pg: Postgres, tmp_path: Path
) -> None:
    """mosquitto keeps a persistent session's queued messages across its restart, but not a
    shared subscription: what the gateways publish after it is back and before a receiver
    has subscribed again is acknowledged and dropped. The store cannot get those messages
    back, but it never loses sight of them: they are an open gap of their epoch."""
    signer = registered(pg, tmp_path, "gw-a")
    log = tmp_path / "r.log"

    def receiver() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = gridedge(
                "receive", "run", "--dsn", pg.dsn, "--host", "127.0.0.1", "--port", str(broker.port),
                "--client-id", "receiver-1", "--group", "fleet", out=out,
            )  # fmt: skip
        return proc

    def publish(*seqs: int) -> None:
        pub = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:6]}"
        )
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for seq in seqs:
            data = signer.sign_bytes(cbor2.dumps(payload("gw-a", seq)))
            pub.publish(f"{PREFIX}/gw-a/up/gnss.fix", data, qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()

    proc = receiver()
    wait_for_log(log, "subscribed")
    publish(1, 2, 3)
    deadline = time.monotonic() + 20
    while count(pg) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop(proc)
    broker.kill()
    broker.start()
    publish(4, 5)  # acknowledged by the broker; no shared subscriber yet
    proc = receiver()
    try:
        deadline = time.monotonic() + 20
        while log.read_text().count("subscribed") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        publish(6, 7)
        deadline = time.monotonic() + 20
        while count(pg) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(proc)
    with psycopg.connect(pg.dsn) as c:
        seqs = {s for (s,) in c.execute("SELECT seq FROM messages")}
        gaps = c.execute("SELECT lo, hi FROM gaps").fetchall()
    assert seqs == {1, 2, 3, 6, 7}
    assert gaps == [(4, 5)]
