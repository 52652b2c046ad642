"""The publisher: outbox rows to the broker at QoS 1, deleted only after PUBACK.

Theory of operation: one session at a time. At CONNECT the broker is given a
freshly signed Last Will (`gateway.status` offline); once connected the gateway
publishes its retained signed birth, subscribes, and pumps rows. The pump takes
the next row from the most urgent lane that has one (strict priority, FIFO within
a lane; telemetry captured since the session began goes before the backlog of the
outage, which then drains oldest first), keeps at most `inflight` messages
unacknowledged (life-safety may exceed that by a small reserve so it never queues
behind telemetry), paces the backlog by the queueing delay it causes (see
`edge/pacing.py`), and hands every PUBACK to the outbox as a delete (or, for a
message published before it was written, as a reason never to write it). When the
link drops, every message not yet acknowledged is written to the outbox before the
next session, which starts its cursors (edge/lanes.py) at zero, so it is all sent
again (the platform deduplicates on gw, ep, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from edge.ingest import Ingest
from edge.lanes import BACKLOG, SendLanes
from edge.mqtt import MqttConnection, TlsSettings, Will
from edge.outbox import Outbox, Row
from edge.pacing import BacklogWindow
from edge.recent import RecentAlarms
from floor.config import MqttConfig
from floor.errors import TransientError
from floor.kinds import LIFE_SAFETY_KINDS, Prio
from floor.messages import Incoming
from floor.supervisor import Backoff, supervise

log = logging.getLogger(__name__)

LIFE_SAFETY_RESERVE = 8
_LIFE_SAFETY = frozenset(LIFE_SAFETY_KINDS)


class LinkState(enum.StrEnum):
    DOWN = "down"
    CONNECTING = "connecting"
    UP = "up"


class Publisher:
    """Keeps one MQTT session alive and drains the outbox through it (and counts what
    went: by kind, the last PUBACK, the latest life-safety messages' delivery)."""

    def __init__(
        self,
        *,
        mqtt: MqttConfig,
        gw: str,
        outbox: Outbox,
        ingest: Ingest,
        subscriptions: tuple[str, ...] = (),
        on_message: Callable[[Incoming], None] | None = None,
        on_life_safety_ack: Callable[[int, Mapping[str, Any] | None], None] | None = None,
        alarm_probe_s: float | None = None,
    ) -> None:
        self._cfg = mqtt
        self._gw = gw
        self._outbox = outbox
        self._ingest = ingest
        self._subs = subscriptions
        self._on_message = on_message
        self._on_ls_ack = on_life_safety_ack  # (seq, what is known of it): the alarm's other paths
        # An alarm without its PUBACK this long: the link is taken for dead and reconnected
        # (a black hole shows in seconds, not a keepalive later); None: only the keepalive.
        self._probe_s = alarm_probe_s
        self._ls_inflight: dict[int, float] = {}  # alarms on the wire: seq -> loop time sent
        self._alarm_out = asyncio.Event()  # set when an alarm goes on the wire: the probe watches
        self._kick = asyncio.Event()
        self.lanes = SendLanes(outbox.fetch)  # edge/lanes.py: the send buffers of the live session
        self.state = LinkState.DOWN
        self.last_error = ""
        self.failed_attempts = 0  # connection attempts failed since the link was last up
        self.sessions = 0
        self.published = 0
        self.acked = 0
        self.published_by_kind: Counter[str] = Counter()
        self.acked_by_kind: Counter[str] = Counter()
        self.last_ack_ms: int | None = None  # unix ms of the latest PUBACK
        self.recent = RecentAlarms()  # the latest life-safety messages and their delivery
        self.up = asyncio.Event()
        self._ls_committed: dict[int, int] = {}  # life-safety seq -> `published` at its commit
        self.ls_overtaken_max = 0
        self.ls_backlog_ahead_max = 0
        self.on_ack: Callable[[int], None] | None = None  # measurement hook (benchmarks)
        self.backlog_window = self._new_window()
        self._conn: MqttConnection | None = None
        self.status_topic = f"{mqtt.topic_prefix}/{gw}/status"

    async def rebirth(self) -> bool:
        """Publish the retained birth again (gateway.rebirth); False when not connected."""
        conn = self._conn
        if conn is None:
            return False
        await conn.publish(self.status_topic, self._status("online"), retain=True)
        return True

    def topic(self, kind: str) -> str:
        return f"{self._cfg.topic_prefix}/{self._gw}/up/{kind}"

    def snapshot(self) -> dict[str, Any]:
        """The uplink's entry in the status (`link`)."""
        return {
            "state": self.state.value,
            "sessions": self.sessions,
            "published": self.published,
            "acked": self.acked,
            "last_error": self.last_error,
            "failures": self.failed_attempts,  # connection attempts failed since it was last up
            "life_safety_overtaken_max": self.ls_overtaken_max,
            # the backlog's pacing (edge/pacing.py): how much of it may be in flight
            # now, how much queueing it sees, and the most of it an alarm found ahead
            "backlog_window": self.backlog_window.allowed,
            "backlog_queueing_ms": round(self.backlog_window.queueing_s * 1000, 1),
            "life_safety_backlog_ahead_max": self.ls_backlog_ahead_max,
            "last_ack_ms": self.last_ack_ms,
            "published_by_kind": dict(self.published_by_kind),
            "acked_by_kind": dict(self.acked_by_kind),
        }

    def on_commit(self, rows: list[Row]) -> None:
        """Rows just committed (the outbox's hook, through the gateway)."""
        self.take(rows, frozenset())

    def accepting(self) -> bool:
        """Whether a message handed over now goes straight into a send buffer: a session
        is up (write-behind asks this before it numbers what it will not write yet)."""
        return self.lanes.buffers is not None

    def take(self, rows: list[Row], unsaved: frozenset[int]) -> list[Row]:
        """Rows just numbered, oldest first (the outbox's `Live`): those in `unsaved` are not
        written yet. Returns those of them it cannot take now; their lanes are not read from
        SQLite until `saved` says they are written."""
        for row in rows:
            if row.prio == Prio.LIFE_SAFETY:
                self._ls_committed[row.seq] = self.published
                self.recent.committed(row.seq, row.kind, row.body)
        refused = self.lanes.take(rows, unsaved)
        self._kick.set()
        return refused

    def saved(self, rows: list[Row]) -> None:
        """Rows `take` could not take are written now: their lanes may be read."""
        self.lanes.saved(rows)
        self._kick.set()

    def _new_window(self) -> BacklogWindow:
        return BacklogWindow(max_window=self._cfg.inflight, target_s=self._cfg.backlog_queue_ms / 1000.0)

    def _status(self, state: str) -> bytes:
        data = {"state": state, "hw": self._outbox.hw, "boot": self._ingest.epoch.boot}
        return self._ingest.sign_state("gateway.status", data)

    async def run(self) -> None:
        """Connect, pump, reconnect with jittered backoff; forever."""
        backoff = Backoff(self._cfg.reconnect_min_s, self._cfg.reconnect_max_s)
        # A broker down for days is retried every few seconds: its first failure is a
        # warning, the identical ones after it debug; the reconnect says how many there were.
        await supervise("mqtt", self._session, backoff, on_error=self._failed, logger=log, quiet_repeats=True)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = str(exc)
        if isinstance(exc, TransientError):
            self.failed_attempts += 1

    async def _session(self) -> None:
        try:
            await self._connected_session()
        finally:
            self.state = LinkState.DOWN
            self.up.clear()
            self._outbox.link_down()  # what was published and not written is written now

    async def _connected_session(self) -> None:
        self.state = LinkState.CONNECTING
        will = Will(self.status_topic, self._status("offline"))
        async with MqttConnection(
            host=self._cfg.host,
            port=self._cfg.port,
            client_id=self._gw,
            keepalive=self._cfg.keepalive_s,
            clean_session=False,
            will=will,
            tls=tls_of(self._cfg),
            inflight=self._cfg.inflight + LIFE_SAFETY_RESERVE,
            on_message=self._on_message,
        ) as conn:
            self.sessions += 1
            log.info(
                "mqtt: connected to %s:%d%s",
                self._cfg.host,
                self._cfg.port,
                f" after {self.failed_attempts} failures" if self.failed_attempts else "",
            )
            self.failed_attempts = 0
            # Subscribed (SUBACK) before the birth says online and before the link counts
            # as up: a platform that sends a command on seeing the birth must find the
            # gateway listening (a first session has no subscription kept by the broker).
            await conn.subscribe(list(self._subs))
            await conn.publish(self.status_topic, self._status("online"), retain=True)
            self.state = LinkState.UP
            self.last_error = ""  # why it was down: not said of a link that is up
            self.up.set()
            self._conn = conn
            try:
                await self._pump(conn)
            finally:
                self._conn = None

    async def _pump(self, conn: MqttConnection) -> None:
        # Whatever the last session published and the broker did not acknowledge is written
        # first: this session reads it from the outbox with the rest.
        await self._outbox.save_unsaved()
        # Telemetry committed before this session is the backlog of an outage: it goes
        # after the telemetry captured since (live first), oldest first, in the window
        # live traffic leaves free.
        self.lanes.open(self._outbox.hw)
        self.backlog_window = self._new_window()  # a new session may be a new link
        self._ls_inflight.clear()
        probe = asyncio.get_running_loop().create_task(self._probe(conn), name="publisher.probe")
        try:
            await self._pump_rows(conn)
        finally:
            self.lanes.close()
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _probe(self, conn: MqttConnection) -> None:
        """Drop a link an alarm found dead: its PUBACK has not come in `alarm_probe_s`."""
        if self._probe_s is None:
            return
        loop = asyncio.get_running_loop()
        while not conn.closed.done():
            if not self._ls_inflight:  # nothing to watch: no waking up four times a second
                self._alarm_out.clear()
                await self._alarm_out.wait()
            await asyncio.sleep(min(0.25, self._probe_s / 4))
            if self._ls_inflight and loop.time() - min(self._ls_inflight.values()) > self._probe_s:
                log.warning(
                    "mqtt: an alarm has had no PUBACK for %.0f s: the link is taken for dead", self._probe_s
                )
                conn.drop(f"no PUBACK for an alarm in {self._probe_s:.0f} s")

    async def _pump_rows(self, conn: MqttConnection) -> None:
        closed = conn.closed
        closed.add_done_callback(lambda _f: self._kick.set())
        window = self.backlog_window
        loop = asyncio.get_running_loop()
        while not closed.done():
            lane, row = await self.lanes.next_row()
            if row is None:
                await self._wait()
                continue
            limit = self._cfg.inflight + (LIFE_SAFETY_RESERVE if row.prio == Prio.LIFE_SAFETY else 0)
            backlog = lane == BACKLOG
            if conn.in_flight >= limit or (backlog and window.in_flight >= window.allowed):
                self.lanes.put_back(lane, row)
                await self._wait()
                continue
            if row.prio == Prio.LIFE_SAFETY:
                # how many messages went out between this alarm's commit and its publish
                since = self._ls_committed.pop(row.seq, self.published)
                self.ls_overtaken_max = max(self.ls_overtaken_max, self.published - since)
                # and how much of the backlog is on the wire ahead of it
                self.ls_backlog_ahead_max = max(self.ls_backlog_ahead_max, window.in_flight)
            fut = conn.publish_nowait(self.topic(row.kind), row.body)
            self.published += 1
            self.published_by_kind[row.kind] += 1
            if row.prio == Prio.LIFE_SAFETY:
                self.recent.published(row.seq)
                self._ls_inflight[row.seq] = loop.time()
                self._alarm_out.set()
            if backlog:
                window.in_flight += 1
            fut.add_done_callback(
                partial(self._done, row.seq, row.kind, window if backlog else None, loop.time())
            )
        exc = closed.result()
        if exc is not None:
            raise exc

    async def _wait(self) -> None:
        """Until something changed: a commit, a PUBACK, or the link closing (all kick)."""
        await self._kick.wait()
        self._kick.clear()

    def _done(
        self, seq: int, kind: str, backlog: BacklogWindow | None, sent: float, fut: asyncio.Future[None]
    ) -> None:
        if backlog is not None:
            backlog.in_flight -= 1
        self._ls_inflight.pop(seq, None)
        if fut.cancelled() or fut.exception() is not None:
            return  # the row stays in the outbox and goes again on the next session
        now = asyncio.get_running_loop().time()
        self.backlog_window.sample(now - sent, now)
        self.acked += 1
        self.acked_by_kind[kind] += 1
        self.last_ack_ms = time.time_ns() // 1_000_000
        if kind in _LIFE_SAFETY:
            self.recent.acked(seq)
            if self._on_ls_ack is not None:
                self._on_ls_ack(seq, self.recent.get(seq))
        self._outbox.ack((seq,))
        if self.on_ack is not None:
            self.on_ack(seq)
        self._kick.set()


def tls_of(c: MqttConfig) -> TlsSettings | None:
    """The uplink's TLS files, when it has any."""
    if c.tls_ca is None:
        return None
    return TlsSettings(
        ca=str(c.tls_ca),
        cert=None if c.tls_cert is None else str(c.tls_cert),
        key=None if c.tls_key is None else str(c.tls_key),
    )
