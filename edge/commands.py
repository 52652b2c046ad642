"""Signed commands from the platform: verified, once, in order, for this gateway only.

Theory of operation: every message on `{p}/{gw}/cmd` or `{p}/group/{g}/cmd` is a
COSE_Sign1 that must verify against the trust anchor `[trust] command_key` (never
the gateway's own key). A command is dropped, and a signed `cmd.result` with
`ok = false` and an error code published, when it is retained, too large, not
CBOR, badly signed, malformed, for another target (or sent on a topic that is not
its target's), expired while the clock is trustworthy, of an unknown type, or when
its `cseq` is not above the last one accepted for its target. Before a command runs
its `cseq` is persisted with the command marked in flight (fsync): a crash
mid-command never runs it again, and at the next start its result is still
published (`interrupted`). Commands run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from floor.clock import Clock
from floor.envelope import keyring, verify
from floor.errors import EnvelopeError
from floor.fsutil import write_atomic
from floor.messages import Incoming
from floor.ratelimit import TokenBucket

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64 * 1024
MAX_QUEUED = 64  # commands waiting to run; a flood beyond this is rejected, not buffered
REJECT_REPORTS_PER_S = 10.0  # cmd.result for rejected junk, so a flood cannot fill the outbox
# Fault injection for the crash-in-the-middle test: hold every command this long
# after its cseq is persisted. Unset in production.
FAULT_DELAY_S = float(os.environ.get("GRIDEDGE_FAULT_CMD_DELAY_S", "0") or 0)


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    to: str
    cseq: int
    iat: int
    exp: int
    type: str
    args: dict[str, Any]


class CommandError(enum.StrEnum):
    """`cmd.result` `error` codes of the command path (docs/envelope-and-topics.md); an
    envelope's (EnvelopeReason) and a firmware update's (FwReason) pass through as they are."""

    RETAINED = "retained"
    WRONG_TOPIC = "wrong_topic"
    WRONG_TARGET = "wrong_target"
    MALFORMED = "malformed"
    EXPIRED = "expired"
    UNKNOWN_TYPE = "unknown_type"
    REPLAY = "replay"
    BUSY = "busy"
    BAD_ARGS = "bad_args"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_ALARM = "unknown_alarm"  # sos.ack: no alarm of that wearable at that seq is known
    UNSUPPORTED = "unsupported"
    STATE_UNWRITABLE = "state_unwritable"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    BAD_CONFIG = "bad_config"  # config.apply: the bundle's config does not load
    BAD_BUNDLE = "bad_bundle"
    TRUST_CHANGE_REFUSED = "trust_change_refused"


class Rejected(Exception):
    """A command that must not run; `code` goes into cmd.result."""

    def __init__(self, code: enum.StrEnum, command_id: str | None = None, detail: str = "") -> None:
        super().__init__(f"{code}{': ' + detail if detail else ''}")
        self.code = code
        self.command_id = command_id
        self.detail = detail


Handler = Callable[[Command], Awaitable[dict[str, Any] | None]]
Report = Callable[[str, Mapping[str, Any]], object]


def parse_command(payload: Any) -> Command:
    """The command map (docs/envelope-and-topics.md, Commands), strictly typed."""
    if not isinstance(payload, dict):
        raise Rejected(CommandError.MALFORMED, detail="payload is not a map")
    cid = payload.get("id")
    if not isinstance(cid, str) or not 0 < len(cid) <= 64:
        raise Rejected(CommandError.MALFORMED, detail="id")
    fields = {"to": str, "cseq": int, "iat": int, "exp": int, "type": str, "args": dict}
    for key, typ in fields.items():
        value = payload.get(key)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise Rejected(CommandError.MALFORMED, cid, key)
    if payload.get("v") != 1 or payload["cseq"] < 0:
        raise Rejected(CommandError.MALFORMED, cid, "v or cseq")
    return Command(
        cid, payload["to"], payload["cseq"], payload["iat"], payload["exp"], payload["type"], payload["args"]
    )


class CommandState:
    """Per-target last accepted cseq and the command in flight, persisted atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: dict[str, int] = {}
        self.inflight: dict[str, Any] | None = None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            self.last = {str(k): int(v) for k, v in doc.get("last", {}).items()}
            self.inflight = doc.get("inflight")
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, TypeError) as exc:
            # Losing this file would let a replay through: refuse everything until fixed.
            log.critical("commands: %s unreadable (%s); refusing commands", path, exc)
            self.last = {"*": 2**62}

    def persist(self, last: dict[str, int], inflight: dict[str, Any] | None) -> None:
        """Write first, then adopt: what is in memory (and shown) is always what is on disk."""
        write_atomic(self.path, json.dumps({"last": last, "inflight": inflight}).encode())
        self.last, self.inflight = last, inflight


class CommandHandler:
    """Receives, checks and runs platform commands."""

    def __init__(
        self,
        *,
        gw: str,
        groups: tuple[str, ...],
        prefix: str,
        trust: Ed25519PublicKey,
        clock: Clock,
        state_path: Path,
        report: Report,
        handlers: Mapping[str, Handler],
    ) -> None:
        self.gw = gw
        self.groups = groups
        self._own_topic = f"{prefix}/{gw}/cmd"
        self._group_topic = {f"{prefix}/group/{g}/cmd": f"group:{g}" for g in groups}
        self.trust = trust
        self._keys = keyring(trust)
        self._clock = clock
        self.state = CommandState(state_path)
        self._report = report
        self._handlers = handlers
        self._queue: asyncio.Queue[tuple[Command, str]] = asyncio.Queue(MAX_QUEUED)
        self._reject_reports = TokenBucket(REJECT_REPORTS_PER_S, 1 / REJECT_REPORTS_PER_S, time.monotonic())
        self.accepted = 0
        self.rejected: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        """The commands' entry in the status."""
        return {
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "last_cseq": dict(self.state.last),
        }

    @property
    def topics(self) -> tuple[str, ...]:
        return (self._own_topic, *self._group_topic)

    def on_message(self, msg: Incoming) -> None:
        """Called by the MQTT connection for every message on a command topic."""
        try:
            cmd, target = self._check(msg)
        except Rejected as exc:
            self._reject(exc)
            return
        try:
            self._queue.put_nowait((cmd, target))
        except asyncio.QueueFull:
            self._reject(Rejected(CommandError.BUSY, cmd.id))

    def _check(self, msg: Incoming) -> tuple[Command, str]:
        if msg.retain:
            raise Rejected(CommandError.RETAINED)  # a stale command parked on the broker, not sent to us now
        target = self._group_topic.get(msg.topic) or (self.gw if msg.topic == self._own_topic else None)
        if target is None:
            raise Rejected(CommandError.WRONG_TOPIC)
        try:
            verified = verify(msg.payload, self._keys, max_bytes=MAX_COMMAND_BYTES)
        except EnvelopeError as exc:
            raise Rejected(exc.reason) from None
        cmd = parse_command(verified.payload)
        if cmd.to != target:
            raise Rejected(CommandError.WRONG_TARGET, cmd.id, f"for {cmd.to!r}")
        now = self._clock.unix_ms()
        if self._clock.trusted and now is not None and now > cmd.exp:
            raise Rejected(CommandError.EXPIRED, cmd.id)
        if cmd.type not in self._handlers:
            raise Rejected(CommandError.UNKNOWN_TYPE, cmd.id, cmd.type)
        return cmd, target

    def _reject(self, exc: Rejected) -> None:
        """Count every rejection; report it (and log it) within the rate limit, except a
        decision on a fresh signed command, which the platform is waiting for. A replayed
        or queued-out copy of a valid command is as cheap to send as junk: limited the same."""
        self.rejected[exc.code] = self.rejected.get(exc.code, 0) + 1
        decided = exc.command_id is not None and exc.code not in (CommandError.REPLAY, CommandError.BUSY)
        if decided or self._reject_reports.take(time.monotonic()):
            log.warning("commands: rejected: %s", exc)
            result: dict[str, Any] = {"id": exc.command_id, "ok": False, "error": exc.code}
            if decided and exc.detail:
                result["detail"] = exc.detail[:200]  # our own words about a verified command
            self._report("cmd.result", result)

    async def run(self) -> None:
        """Report a command a crash interrupted, then run commands one at a time."""
        if self.state.inflight is not None:
            lost = self.state.inflight
            self._report(
                "cmd.result",
                {
                    "id": lost.get("id"),
                    "ok": False,
                    "error": CommandError.INTERRUPTED,
                    "type": lost.get("type"),
                },
            )
            await asyncio.to_thread(self.state.persist, dict(self.state.last), None)
        while True:
            cmd, target = await self._queue.get()
            await self._execute(cmd, target)

    async def _execute(self, cmd: Command, target: str) -> None:
        last = max(self.state.last.get(target, -1), self.state.last.get("*", -1))
        if cmd.cseq <= last:
            self._reject(Rejected(CommandError.REPLAY, cmd.id, f"cseq {cmd.cseq} <= {last}"))
            return
        # Persist first: whatever happens next, this cseq is spent.
        inflight = {"id": cmd.id, "type": cmd.type, "cseq": cmd.cseq}
        try:
            await asyncio.to_thread(self.state.persist, {**self.state.last, target: cmd.cseq}, inflight)
        except OSError as exc:
            # Running it without a durable cseq could run it twice: refuse instead.
            self._reject(Rejected(CommandError.STATE_UNWRITABLE, cmd.id, exc.strerror or ""))
            return
        self.accepted += 1
        if FAULT_DELAY_S:
            await asyncio.sleep(FAULT_DELAY_S)  # fault injection: a crash lands mid-command
        result: dict[str, Any] = {"id": cmd.id, "ok": True, "error": None}
        try:
            extra = await self._handlers[cmd.type](cmd)
            if extra:
                result.update(extra)
        except Rejected as exc:
            result.update(ok=False, error=exc.code)
            if exc.detail:
                result["detail"] = exc.detail[:200]
        except Exception:  # a failing command must not stop the gateway
            log.exception("commands: %s %s failed", cmd.type, cmd.id)
            result.update(ok=False, error=CommandError.FAILED)
        committed = self._report("cmd.result", result)
        if isinstance(committed, asyncio.Future):
            # The result is on disk before the in-flight mark goes: a crash between the
            # two reports the command twice (interrupted, then ok), never zero times.
            with contextlib.suppress(Exception):
                await committed
        with contextlib.suppress(OSError):  # an unwritable state dir: reported at the next start
            await asyncio.to_thread(self.state.persist, dict(self.state.last), None)
