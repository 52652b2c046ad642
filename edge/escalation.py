"""When nobody answers: a wearable's alarm (an SOS, a fall, no motion) that no `sos.ack`
acknowledges within `ack_within_s` starts the configured steps, one every
`escalate_every_s`: repeat it over every bearer, tell the duty numbers in words that
nobody has answered, alert the other wearables on this gateway. Each step is published
(`alarm.escalated`); an ack, or the worker's own cancel, stops them.

What is being escalated is saved (`state_dir/escalations.json`) after every step, so a
restart neither forgets an alarm nobody answered nor repeats a step it already took.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from floor.envelope import own_payload
from floor.fsutil import write_atomic

log = logging.getLogger(__name__)

ALARMS = ("sos.alarm", "worker.down")  # what a platform's sos.ack acknowledges
CANCEL = "sos.cancel"  # (a fall is cancelled by a worker.down with `cancel`)
KEEP = 64  # alarms being escalated at once, at most (the oldest gives way)
TICK_S = 1.0


@dataclass
class Unanswered:
    """An alarm waiting for its acknowledgement."""

    seq: int
    device: str
    worker: str
    kind: str
    at_ms: int  # when it was committed (unix ms)
    payload_hex: str  # the signed body, for the steps that send it again
    step: int = 0  # the next step to take

    @property
    def body(self) -> bytes:
        return bytes.fromhex(self.payload_hex)


Step = Callable[[Unanswered], Awaitable[Mapping[str, Any]]]


class Escalation:
    def __init__(
        self,
        *,
        ack_within_s: float,
        every_s: float,
        steps: Sequence[tuple[str, Step]],
        state_file: Path,
        report: Callable[[dict[str, Any]], object],
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.ack_within_s = ack_within_s
        self.every_s = every_s
        self.steps = list(steps)
        self._file = state_file
        self._report = report
        self._now_ms = now_ms
        self.waiting: dict[int, Unanswered] = self._load()
        self.escalated = 0

    def _load(self) -> dict[int, Unanswered]:
        try:
            docs = json.loads(self._file.read_bytes())
            return {int(d["seq"]): Unanswered(**d) for d in docs}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("escalation: %s unreadable (%s): unanswered alarms are not escalated", self._file, exc)
            return {}

    def _save(self) -> None:
        try:
            write_atomic(self._file, json.dumps([asdict(u) for u in self.waiting.values()]).encode())
        except OSError as exc:
            log.error("escalation: cannot save %s: %s", self._file, exc.strerror)

    def committed(self, seq: int, kind: str, body: bytes) -> None:
        """A life-safety message was committed: an alarm starts waiting for its ack, a
        cancel ends the waiting of its wearable's alarms."""
        if kind not in (*ALARMS, CANCEL) or not self.steps:
            return
        try:
            d = own_payload(body)["recs"][0]["d"]
            device, worker, cancel = str(d["device"]), str(d.get("worker", "")), bool(d.get("cancel"))
        except (ValueError, KeyError, IndexError, TypeError):
            return
        if cancel or kind == CANCEL:
            self._stop(lambda u: u.device == device, "cancelled")
            return
        self.waiting[seq] = Unanswered(seq, device, worker, kind, self._now_ms(), body.hex())
        while len(self.waiting) > KEEP:
            self.waiting.pop(next(iter(self.waiting)))
        self._save()

    def acked(self, seq: int) -> None:
        """The platform acknowledged the alarm committed as `seq`."""
        self._stop(lambda u: u.seq == seq, "acknowledged")

    def _stop(self, which: Callable[[Unanswered], bool], why: str) -> None:
        done = [u for u in self.waiting.values() if which(u)]
        for u in done:
            del self.waiting[u.seq]
            if u.step:
                log.info("escalation: alarm %d %s after %d step(s)", u.seq, why, u.step)
        if done:
            self._save()

    def due(self, u: Unanswered) -> int:
        """When its next step is due (unix ms)."""
        return u.at_ms + int((self.ack_within_s + u.step * self.every_s) * 1000)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self.tick()

    async def tick(self) -> None:
        """Take every step that is due (one per alarm per tick, in their order)."""
        now = self._now_ms()
        for u in list(self.waiting.values()):
            if u.step >= len(self.steps) or now < self.due(u):
                continue
            name, take = self.steps[u.step]
            try:
                detail = dict(await take(u))
            except Exception:  # a step that fails must not stop the next, nor other alarms'
                log.exception("escalation: step %s of alarm %d failed", name, u.seq)
                detail = {"failed": True}
            if self.waiting.get(u.seq) is not u:
                continue  # acknowledged while the step ran: no report of a step nobody needs
            u.step += 1
            self.escalated += 1
            rec = {"alarm_seq": u.seq, "kind": u.kind, "device": u.device, "worker": u.worker}
            self._report(rec | {"step": name, "n": u.step, "waited_s": (now - u.at_ms) // 1000} | detail)
            self._save()

    def snapshot(self) -> dict[str, Any]:
        return {
            "waiting": {str(u.seq): {"device": u.device, "step": u.step} for u in self.waiting.values()},
            "escalated": self.escalated,
        }
