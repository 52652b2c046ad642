"""`gridedge receive`: the receiver as a service. Any number of instances split the
fleet's stream through an MQTT 5 shared subscription (`$share/<group>/...`); each keeps a
persistent session (its client id, a session that outlives a disconnection) so nothing
is lost while it restarts; a message is acknowledged to the broker only once its row is
committed (or it was refused and counted), so a crash between the two makes the broker
deliver it again, and the store keeps it once.

    gridedge receive register --dsn DSN --gw GW --pubkey gw.pub [--group G]
    gridedge receive run --dsn DSN --host BROKER --port 1883 --client-id receiver-1 [--group gridedge]
        [--http 127.0.0.1:9108 [--sms-token-file F]] [--webhook URL [--webhook-secret-file F]]
    gridedge receive prune --dsn DSN --days 90
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from floor.config import split_host_port
from floor.envelope import load_public_key
from tools.receive import web
from tools.receive.receiver import Receiver
from tools.receive.store import Store
from tools.receive.webhook import Webhook

log = logging.getLogger(__name__)

BATCH = 500  # messages committed together at most (what waited while the last commit ran)
UPKEEP_S = 3600.0  # partitions made ahead and stale SMS parts dropped this often
SESSION_S = 86400  # how long the broker keeps an instance's session (and its messages) while it is away


@dataclass(frozen=True, slots=True)
class _Mqtt:
    topic: str
    data: bytes
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class _Sms:
    sender: str
    ud: bytes
    done: Future[str]


class ReceiveService:
    def __init__(
        self,
        dsn: str,
        *,
        host: str,
        port: int,
        client_id: str,
        group: str = "gridedge",
        prefix: str = "gridedge/v1",
        webhook: Webhook | None = None,
    ) -> None:
        self.dsn = dsn
        self.host, self.port = host, port
        self.group, self.prefix = group, prefix
        self.client_id = client_id
        self.webhook = webhook
        self._work: queue.Queue[_Mqtt | _Sms | None] = queue.Queue(maxsize=10_000)
        self.outcomes: Counter[str] = Counter()
        self.batches = 0
        self.commit_s = 0.0
        self.last_commit = 0.0
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        self.client.on_connect = self._connected
        self.client.on_message = self._message

    def stats(self) -> dict[str, Any]:
        """What /metrics shows (read on the HTTP thread: plain numbers and a copy)."""
        hook = self.webhook
        return {
            "outcomes": dict(self.outcomes),
            "batches": self.batches,
            "commit_s": self.commit_s,
            "queue": self._work.qsize(),
            "last_commit": self.last_commit,
            "webhook": dict(hook.results) if hook else {},
            "webhook_waiting": hook.waiting if hook else 0,
        }

    def submit_sms(self, sender: str, ud: bytes) -> Future[str]:
        """An SMS a provider delivered, stored on the worker; the future has its outcome
        once it is committed."""
        done: Future[str] = Future()
        self._work.put(_Sms(sender, ud, done))
        return done

    def _connected(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("receive: the broker refused the connection: %s", rc)
            return
        topics = [f"$share/{self.group}/{self.prefix}/+/up/#", f"$share/{self.group}/{self.prefix}/+/status"]
        client.subscribe([(t, 1) for t in topics])
        log.info("receive: %s subscribed to %s", self.client_id, ", ".join(topics))

    def _message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        # the network thread only queues: the store's commit happens on the worker
        self._work.put(_Mqtt(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _worker(self) -> None:
        with Store.open(self.dsn) as store:
            receiver = Receiver(store, prefix=self.prefix)
            upkeep = time.monotonic()
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if time.monotonic() - upkeep > UPKEEP_S:  # tomorrow's partitions, stale SMS parts
                    upkeep = time.monotonic()
                    store.make_days()
                    store.expire_sms_parts()
                sms: list[tuple[_Sms, str]] = []
                started = time.monotonic()
                try:
                    with store.batch():
                        receiver.take_many([(w.topic, w.data) for w in batch if isinstance(w, _Mqtt)])
                        sms = [(w, receiver.take_sms(w.sender, w.ud)) for w in batch if isinstance(w, _Sms)]
                except Exception:
                    # the store failed: nothing unacknowledged is lost (the session keeps it for
                    # the next start, a provider delivers again), so the process ends and its
                    # supervisor starts it again
                    log.exception("receive: messages could not be stored; exiting, the broker keeps them")
                    os._exit(70)
                self.batches += 1
                self.commit_s += time.monotonic() - started
                self.last_commit = time.time()
                self.outcomes = receiver.outcomes
                for w in batch:  # only now: their rows are committed
                    if isinstance(w, _Mqtt) and w.qos:
                        self.client.ack(w.mid, w.qos)
                for item, outcome in sms:
                    item.done.set_result(outcome)
                for note in receiver.life_safety:
                    if self.webhook is not None:
                        self.webhook.post(note)
                receiver.life_safety.clear()

    def _next_batch(self) -> list[_Mqtt | _Sms] | None:
        """The next message, and what else is waiting (up to BATCH): one commit for them all."""
        first = self._work.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < BATCH:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._work.put(None)
                break
            batch.append(item)
        return batch

    def run(self, *, http: tuple[str, int] | None = None, sms_token: str | None = None) -> None:
        worker = threading.Thread(target=self._worker, name="receive.store", daemon=True)
        worker.start()
        if http is not None:
            ready: Future[int] = Future()
            application = web.app(self.stats, self.submit_sms if sms_token else None, sms_token)
            threading.Thread(
                target=web.serve, args=(application, *http, ready), name="receive.http", daemon=True
            ).start()
            log.info(
                "receive: HTTP on %s:%d (/metrics%s)",
                http[0],
                ready.result(10),
                ", /sms" if sms_token else "",
            )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_S
        self.client.reconnect_delay_set(1, 5)
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        try:
            self.client.loop_forever(retry_first_connection=True)
        finally:
            self._work.put(None)
            worker.join(timeout=10)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="gridedge receive", description=(__doc__ or "").split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("register", help="add (or update) a gateway in the registry")
    r.add_argument("--dsn", required=True)
    r.add_argument("--gw", required=True)
    r.add_argument("--pubkey", type=Path, required=True)
    r.add_argument("--group")
    s = sub.add_parser("run", help="receive the fleet's messages into the store")
    s.add_argument("--dsn", required=True)
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, default=1883)
    s.add_argument("--client-id", required=True, help="this instance's own, kept across its restarts")
    s.add_argument("--group", default="gridedge", help="the shared subscription's group")
    s.add_argument("--prefix", default="gridedge/v1")
    s.add_argument("--http", metavar="HOST:PORT", help="serve /metrics (and /sms) here")
    s.add_argument("--sms-token-file", type=Path, help="take SMS deliveries at /sms with this bearer token")
    s.add_argument("--webhook", metavar="URL", help="POST each life-safety row here once it is committed")
    s.add_argument("--webhook-secret-file", type=Path, help="sign the webhook's posts (HMAC-SHA256)")
    p = sub.add_parser("prune", help="drop whole days of messages older than --days")
    p.add_argument("--dsn", required=True)
    p.add_argument("--days", type=int, required=True)
    a = ap.parse_args(argv)
    if a.what == "register":
        with Store.open(a.dsn) as store:
            store.register(a.gw, load_public_key(a.pubkey.read_bytes()), group=a.group)
        return 0
    if a.what == "prune":
        with Store.open(a.dsn) as store:
            gone = store.drop_days_before(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=a.days))
        print(json.dumps({"dropped": [str(d) for d in gone]}))
        return 0
    http = None
    if a.http:
        try:
            http = split_host_port(a.http)
        except ValueError:
            raise SystemExit("gridedge receive run: --http HOST:PORT") from None
    token = a.sms_token_file.read_text().strip() if a.sms_token_file else None
    if token is not None and http is None:
        raise SystemExit("gridedge receive run: --sms-token-file needs --http (where the provider delivers)")
    secret = a.webhook_secret_file.read_bytes().strip() if a.webhook_secret_file else None
    logging.getLogger().setLevel(logging.INFO)  # a service: what it does is logged
    ReceiveService(
        a.dsn,
        host=a.host,
        port=a.port,
        client_id=a.client_id,
        group=a.group,
        prefix=a.prefix,
        webhook=Webhook(a.webhook, secret) if a.webhook else None,
    ).run(http=http, sms_token=token)
    return 0
