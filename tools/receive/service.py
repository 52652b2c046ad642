"""`gridedge receive`: the receiver as a service. Any number of instances split the
fleet's stream through an MQTT 5 shared subscription (`$share/<group>/...`); each keeps a
persistent session (its client id, a session that outlives a disconnection) so nothing
is lost while it restarts; a message is acknowledged to the broker only once its row is
committed (or it was refused and counted), so a crash between the two makes the broker
deliver it again, and the store keeps it once.

    gridedge receive register --dsn DSN --gw GW --pubkey gw.pub [--group G]
    gridedge receive run --dsn DSN --host BROKER --port 1883 --client-id receiver-1 [--group gridedge]
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from floor.envelope import load_public_key
from tools.receive.receiver import Receiver
from tools.receive.store import Store

log = logging.getLogger(__name__)

BATCH = 500  # messages committed together at most (what waited while the last commit ran)
SESSION_S = 86400  # how long the broker keeps an instance's session (and its messages) while it is away


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
    ) -> None:
        self.dsn = dsn
        self.host, self.port = host, port
        self.group, self.prefix = group, prefix
        self.client_id = client_id
        self._work: queue.Queue[tuple[str, bytes, int, int] | None] = queue.Queue(maxsize=10_000)
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        self.client.on_connect = self._connected
        self.client.on_message = self._message

    def _connected(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("receive: the broker refused the connection: %s", rc)
            return
        topics = [f"$share/{self.group}/{self.prefix}/+/up/#", f"$share/{self.group}/{self.prefix}/+/status"]
        client.subscribe([(t, 1) for t in topics])
        log.info("receive: %s subscribed to %s", self.client_id, ", ".join(topics))

    def _message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        # the network thread only queues: the store's commit happens on the worker
        self._work.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _worker(self) -> None:
        with Store.open(self.dsn) as store:
            receiver = Receiver(store, prefix=self.prefix)
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                try:
                    with store.batch():
                        receiver.take_many([(topic, data) for topic, data, _mid, _qos in batch])
                except Exception:
                    # the store failed: nothing unacknowledged is lost (the session keeps it for
                    # the next start), so the process ends and its supervisor starts it again
                    log.exception("receive: messages could not be stored; exiting, the broker keeps them")
                    os._exit(70)
                for _topic, _data, mid, qos in batch:  # only now: their rows are committed
                    if qos:
                        self.client.ack(mid, qos)

    def _next_batch(self) -> list[tuple[str, bytes, int, int]] | None:
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

    def run(self) -> None:
        worker = threading.Thread(target=self._worker, name="receive.store", daemon=True)
        worker.start()
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
    a = ap.parse_args(argv)
    if a.what == "register":
        with Store.open(a.dsn) as store:
            store.register(a.gw, load_public_key(a.pubkey.read_bytes()), group=a.group)
        return 0
    logging.getLogger().setLevel(logging.INFO)  # a service: what it does is logged
    ReceiveService(
        a.dsn, host=a.host, port=a.port, client_id=a.client_id, group=a.group, prefix=a.prefix
    ).run()
    return 0
