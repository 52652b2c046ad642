"""Readings in, signed messages into the outbox: the batcher and signer.

Telemetry of one kind and source is gathered for at most `batch_ms` into one
message; life-safety and event kinds are never batched or delayed. A message is
signed exactly once, by the outbox writer, when its seq is known; resends reuse
the stored bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from edge.outbox import Outbox, Pending
from floor import compact
from floor.clock import Clock, Stamp, boot_id
from floor.envelope import ENVELOPE_VERSION, Signer
from floor.fsutil import write_atomic
from floor.kinds import Prio, prio_of

log = logging.getLogger(__name__)

MAX_BATCH_RECORDS = 64  # keeps one message about 10 KiB: small enough not to hold an alarm up on the wire


@dataclass(frozen=True, slots=True)
class Epoch:
    """This start of the gateway: persisted counter plus a fresh random nonce, and the
    boot it runs in (the kernel's boot id: every `tb` of the epoch counts from that
    boot; published in `gateway.status` and `time.anchor`, not in `ep`)."""

    counter: int
    nonce: bytes
    boot: str = ""

    def cbor(self) -> list[Any]:
        return [self.counter, self.nonce]


def start_epoch(state_dir: Path) -> Epoch:
    """Bump the persisted start counter (atomically, fsynced) and draw a nonce."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "epoch"
    counter = 0
    try:
        text = path.read_text(encoding="ascii").strip()
        counter = int(text) if text.isdigit() else 0
    except FileNotFoundError:
        pass
    counter += 1
    try:
        write_atomic(path, f"{counter}\n".encode())
    except OSError as exc:
        # A full disk must not stop the gateway: the fresh nonce still makes (ep, seq)
        # unique, and the counter is persisted at the next start that has room.
        log.error("epoch: cannot persist start counter %d in %s: %s", counter, state_dir, exc.strerror)
    return Epoch(counter, os.urandom(8), boot_id())


@dataclass(slots=True)
class _Batch:
    kind: str
    src: str
    tq: str
    tb: int
    recs: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Ingest:
    """Turns readings into signed outbox messages."""

    def __init__(
        self,
        *,
        gw: str,
        epoch: Epoch,
        signer: Signer,
        outbox: Outbox,
        clock: Clock,
        batch_ms: int,
        worker_of: Callable[[str], str | None] = lambda _device: None,
        posture: Callable[[], str] = lambda: "everyday",
    ) -> None:
        self.gw = gw
        self.epoch = epoch
        self._signer = signer
        self._outbox = outbox
        self._clock = clock
        self._batch_s = batch_ms / 1000.0
        self._batches: dict[tuple[str, str], _Batch] = {}
        self.records = 0
        # The worker a device is bound to now (floor/registry.py), or None: every record
        # about a worker's kit carries it as it was when the record was made.
        self.worker_of = worker_of
        self._posture = posture  # the gateway's posture: a message made in an emergency says so

    def payload(
        self,
        *,
        seq: int,
        kind: str,
        src: str,
        tq: str,
        recs: list[dict[str, Any]],
        prio: Prio | None = None,
        posture: str = "everyday",
    ) -> dict[str, Any]:
        extra = {} if posture == "everyday" else {"posture": posture}
        return extra | {
            "v": ENVELOPE_VERSION,
            "gw": self.gw,
            "ep": self.epoch.cbor(),
            "seq": seq,
            "kind": kind,
            "src": src,
            "prio": int(prio_of(kind) if prio is None else prio),
            "tq": tq,
            "recs": recs,
        }

    def _maker(
        self, kind: str, src: str, tq: str, recs: list[dict[str, Any]], prio: Prio | None = None
    ) -> Callable[[int], bytes]:
        posture = self._posture()  # as it is now, when the record was made, not when it is numbered

        def make(seq: int) -> bytes:
            payload = self.payload(seq=seq, kind=kind, src=src, tq=tq, recs=recs, prio=prio, posture=posture)
            return self._signer.sign_bytes(cbor2.dumps(payload))

        return make

    def pending(self, kind: str, src: str, recs: list[dict[str, Any]], tq: str) -> Pending:
        """An outbox item for ready-made records (one message, not batched)."""
        prio = prio_of(kind)
        tb = recs[0]["tb"] if recs else 0
        return Pending(prio, kind, src, tb, self._maker(kind, src, tq, recs))

    def sign_compact(self, payload: Mapping[str, Any]) -> bytes:
        """A message's compact signed form for a second bearer (floor/compact.py)."""
        return self._signer.sign_bytes(cbor2.dumps(compact.pack(payload)))

    def signature(self, data: bytes) -> bytes:
        """The gateway key's bare Ed25519 signature over `data` (a signed short form)."""
        return self._signer.signature(data)

    def test_message(self, bearer: str) -> dict[str, Any]:
        """A bearer's test (`bearer.test`, seq 0: state, not a message of the sequence)."""
        st = self._clock.now()
        rec = {"tb": st.tb, "tu": st.tu, "d": {"bearer": bearer}}
        return self.payload(seq=0, kind="bearer.test", src="gw", tq=st.tq, recs=[rec])

    def sign_state(self, kind: str, data: Mapping[str, Any]) -> bytes:
        """A signed seq-0 state message (gateway.status) that does not go through the outbox."""
        st = self._clock.now()
        rec = {"tb": st.tb, "tu": st.tu, "d": dict(data)}
        return self._signer.sign(self.payload(seq=0, kind=kind, src="gw", tq=st.tq, recs=[rec]))

    def submit(
        self,
        kind: str,
        src: str,
        data: Mapping[str, Any],
        *,
        stamp: Stamp | None = None,
        prio: Prio | None = None,
        state: tuple[str, bytes] | None = None,
        seq_state: tuple[str, bytes] | None = None,
    ) -> asyncio.Future[int] | None:
        """Accept one reading. Unbatched kinds return a future that resolves with the seq
        once the message is committed; batched telemetry returns None. `prio` raises a
        reading above its kind's lane (a battery level that changed is an event); `state`
        and `seq_state` (a record keyed by the message's seq, Pending.seq_state) are committed
        with an unbatched message, in the same transaction."""
        st = stamp or self._clock.now()
        d = dict(data)
        # the worker the wearable is bound to now, which a later re-bind does not rewrite; the
        # gateway's own reports (src gw) about a wearable name it as `device`
        subject = d.get("device") if src == "gw" else src
        if isinstance(subject, str) and (worker := self.worker_of(subject)) is not None:
            d["worker"] = worker
        rec = {"tb": st.tb, "tu": st.tu, "d": d}
        self.records += 1
        base = prio_of(kind)
        lane = base if prio is None else prio
        if lane < Prio.TELEMETRY or self._batch_s <= 0:
            over = None if lane == base else lane
            fut = self._outbox.submit(
                Pending(
                    lane,
                    kind,
                    src,
                    st.tb,
                    self._maker(kind, src, st.tq, [rec], over),
                    state=state,
                    seq_state=seq_state,
                )
            )
            fut.add_done_callback(_log_failure)  # many reports are submitted and not awaited
            return fut
        if state is not None or seq_state is not None:
            raise ValueError("state goes only with unbatched messages")
        key = (kind, src)
        batch = self._batches.get(key)
        if batch is not None and batch.tq != st.tq:
            self._flush(key)
            batch = None
        if batch is None:
            batch = self._batches[key] = _Batch(kind, src, st.tq, st.tb)
            batch.timer = asyncio.get_running_loop().call_later(self._batch_s, self._flush, key)
        batch.recs.append(rec)
        if len(batch.recs) >= MAX_BATCH_RECORDS:
            self._flush(key)
        return None

    async def emit(
        self,
        kind: str,
        src: str,
        data: Mapping[str, Any],
        *,
        stamp: Stamp | None = None,
        prio: Prio | None = None,
        state: tuple[str, bytes] | None = None,
        seq_state: tuple[str, bytes] | None = None,
    ) -> int | None:
        """Like submit, but waits for the commit of unbatched kinds."""
        fut = self.submit(kind, src, data, stamp=stamp, prio=prio, state=state, seq_state=seq_state)
        return None if fut is None else await fut

    def _flush(self, key: tuple[str, str]) -> None:
        batch = self._batches.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        fut = self._outbox.submit(
            Pending(
                prio_of(batch.kind),
                batch.kind,
                batch.src,
                batch.tb,
                self._maker(batch.kind, batch.src, batch.tq, batch.recs),
            )
        )
        fut.add_done_callback(_log_failure)

    def flush_all(self) -> None:
        """Hand every open batch to the outbox now (shutdown)."""
        for key in list(self._batches):
            self._flush(key)


def _log_failure(fut: asyncio.Future[int]) -> None:
    """Retrieve the outcome of a message nobody may await (no "exception never retrieved").
    The outbox has logged why (a failed commit as an error, the first refusal of a full
    outbox or disk as a warning) and counts refusals, so this is only debug."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.debug("outbox: message not stored: %s", exc)
