"""SMS through a cellular modem's AT port (`[sms]`): life-safety messages in their
compact signed form (8-bit data) to each of the platform's `numbers`, and in words
(`edge/bearers/readable.py`, Chinese or English as the phone shows it) to each of the
`duty_numbers`, concatenated when they do not fit one SMS.

Each message to each number is a journal entry (`state_dir/sms-journal.json`): which of
its parts that number has accepted. Parts go one by one; a part refused is sent again,
never one a number already accepted, and a message is never started again for a number
that has it, across restarts too; whatever is still owed is retried until it is sent or
a day old. Concatenation references are 16-bit, from a counter kept in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from drivers.modem.modem import Modem, ModemError
from drivers.modem.pdu import Part, PduError, split, submit, submit_text, text_parts
from drivers.part import Bearer, BearerHost, BearerPart, BearerRefused
from floor.config import BearerConfig, Section, bearer_basics, phone_numbers
from floor.errors import N_
from floor.fsutil import write_atomic

log = logging.getLogger(__name__)

RETRY_S = 10.0  # what a number still owes is tried again this often
OWED_FOR_S = 86400.0  # ...for a day at most (an SMS centre keeps it no longer either)
KEEP_DONE = 4096  # messages a number has whole, remembered so they never go to it again


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsConfig(BearerConfig):
    name: ClassVar[str] = "sms"
    port: str = ""  # the modem's AT command port (a Quectel EC25's is /dev/ttyUSB2); empty: off
    baudrate: int = 115200
    numbers: tuple[str, ...] = ()  # the platform's SMS numbers: each gets every message, signed
    duty_numbers: tuple[str, ...] = ()  # people's phones: each gets every message in words
    max_parts_per_hour: int = 60  # SMS parts in any hour; new alarms go even past it, repeats never
    timeout_s: float = 30.0  # an AT command unanswered this long: the modem is reopened

    @property
    def enabled(self) -> bool:
        return bool(self.port)

    @property
    def per_hour(self) -> int:
        return self.max_parts_per_hour


_D = SmsConfig()


def parse(t: Section) -> SmsConfig:
    sms = SmsConfig(
        **bearer_basics(t, _D),
        port=t.text("port", _D.port),
        baudrate=t.integer("baudrate", _D.baudrate, lo=1200, hi=4_000_000),
        numbers=phone_numbers(t, "numbers"),
        duty_numbers=phone_numbers(t, "duty_numbers"),
        max_parts_per_hour=t.integer("max_parts_per_hour", _D.max_parts_per_hour, lo=1, hi=10_000),
        timeout_s=t.number("timeout_s", _D.timeout_s, lo=1.0),
    )
    if sms.enabled and not sms.numbers and not sms.duty_numbers:
        raise t.error("numbers", N_("is required when port is set: the platform's SMS number(s)"))
    t.done()
    return sms


@dataclass
class Owed:
    """One message to one number: what it is and how many of its parts went."""

    number: str
    ref: int
    data: str  # hex of the compact bytes, or the text itself
    text: bool
    since: float  # unix s
    done: int = 0
    parts: int = 0


@dataclass
class Journal:
    """Every message still owed to a number, and the next concatenation reference."""

    path: Path
    next_ref: int = 0
    owed: dict[str, Owed] = field(default_factory=dict)  # "<message>|<number>" -> Owed
    done: dict[str, float] = field(default_factory=dict)  # "<message>|<number>" -> when it was whole

    def finished(self, k: str, now: float) -> None:
        """`k` went whole: it is never started again (for a day, the most kept)."""
        self.owed.pop(k, None)
        self.done[k] = now
        for old in [x for x, t in self.done.items() if now - t > OWED_FOR_S][:64]:
            del self.done[old]
        while len(self.done) > KEEP_DONE:
            del self.done[next(iter(self.done))]

    @classmethod
    def load(cls, path: Path) -> Journal:
        j = cls(path, int.from_bytes(os.urandom(2), "big"))  # a fresh gateway starts anywhere
        try:
            doc = json.loads(path.read_bytes())
            j.next_ref = int(doc["next_ref"]) & 0xFFFF
            j.owed = {k: Owed(**v) for k, v in doc["owed"].items()}
            j.done = {str(k): float(v) for k, v in doc.get("done", {}).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("sms: %s unreadable (%s): messages owed to numbers are forgotten", path, exc)
        return j

    def save(self) -> None:
        doc = {
            "next_ref": self.next_ref,
            "owed": {k: v.__dict__ for k, v in self.owed.items()},
            "done": self.done,
        }
        try:
            write_atomic(self.path, json.dumps(doc).encode())
        except OSError as exc:
            log.error("sms: cannot save %s: %s", self.path, exc.strerror)

    def ref(self) -> int:
        ref, self.next_ref = self.next_ref, (self.next_ref + 1) & 0xFFFF
        return ref


class SmsBearer:
    name = "sms"

    def __init__(self, cfg: SmsConfig, host: BearerHost) -> None:
        self.cfg = cfg
        self.modem = Modem("sms", cfg.port, cfg.baudrate, timeout_s=cfg.timeout_s)
        self.journal = Journal.load(host.state_dir / "sms-journal.json")
        self._lock = asyncio.Lock()  # one part at a time, from a send or the retries
        self.last_cmgs_ms: float | None = None  # from a send's start to its last +CMGS
        self.last_success_ms: int | None = None
        self.retried = 0

    def ready(self) -> bool:
        return self.modem.ready.is_set()

    def cost(self, data: bytes, text: str | None) -> int:
        words = text_parts(text) * len(self.cfg.duty_numbers) if text else 0
        return len(split(data)) * len(self.cfg.numbers) + words

    async def send(self, key: str, data: bytes, text: str | None) -> int:
        """The message to every number (signed) and duty number (in words), part by
        part; the parts sent. Refused (BearerRefused) when no platform number has it
        whole: what is owed is retried by `run`."""
        started = time.monotonic()
        now = time.time()
        entries = self._owe_all(key, self.cfg.numbers, data.hex(), False, now)
        if text:
            entries += self._owe_all(key, self.cfg.duty_numbers, text, True, now)
        self.journal.save()
        sent, whole, error = 0, len(self.cfg.numbers) - sum(not o.text for _k, o in entries), None
        for k, o in entries:
            try:
                sent += await self._deliver(k, o)
                whole += not o.text
            except BearerRefused as exc:
                error = error or exc
        self.last_cmgs_ms = (time.monotonic() - started) * 1000.0
        if error is not None and (whole == 0 and self.cfg.numbers):
            raise error
        return sent

    async def tell(self, key: str, text: str) -> int:
        """`text` to the duty numbers only; what a number does not take is owed (retried)."""
        now = time.time()
        entries = self._owe_all(key, self.cfg.duty_numbers, text, True, now)
        self.journal.save()
        sent = 0
        for k, o in entries:
            with contextlib.suppress(BearerRefused):
                sent += await self._deliver(k, o)
        return sent

    def _owe_all(
        self, key: str, numbers: tuple[str, ...], data: str, text: bool, now: float
    ) -> list[tuple[str, Owed]]:
        """The message owed to each number that does not have it whole already (never
        started again for a number that has it; resumed where it stopped for one owed it)."""
        out = []
        for number in numbers:
            k = f"{key}|{number}"
            if k in self.journal.done:
                continue
            if k not in self.journal.owed:
                self.journal.owed[k] = Owed(number, self.journal.ref(), data, text, now)
            out.append((k, self.journal.owed[k]))
        return out

    def _parts(self, o: Owed) -> list[Part]:
        if o.text:
            return submit_text(o.number, o.data, o.ref)
        return submit(o.number, bytes.fromhex(o.data), o.ref)

    async def _deliver(self, k: str, o: Owed) -> int:
        """The parts of `o` its number has not accepted, in order; the count sent."""
        sent = 0
        try:
            parts = self._parts(o)
        except PduError as exc:
            self.journal.owed.pop(k, None)
            raise BearerRefused("pdu", str(exc)) from exc
        o.parts = len(parts)
        async with self._lock:
            while o.done < len(parts):
                try:
                    await self.modem.send(parts[o.done])
                except ModemError as exc:
                    raise BearerRefused(exc.reason.value, exc.detail) from exc
                o.done += 1
                sent += 1
                self.last_success_ms = time.time_ns() // 1_000_000
                self.journal.save()  # a part accepted is never sent again
            self.journal.finished(k, time.time())
            self.journal.save()
        return sent

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._retry(), name="sms.retry")
            await self.modem.run()

    async def _retry(self) -> None:
        """What numbers still owe, again, part by part; forgotten after a day."""
        while True:
            await asyncio.sleep(RETRY_S)
            if not self.ready():
                continue
            now = time.time()
            for k, o in list(self.journal.owed.items()):
                if now - o.since > OWED_FOR_S:
                    log.error(
                        "sms: %s never took %s (parts %d of %d): given up", o.number, k, o.done, o.parts
                    )
                    self.journal.owed.pop(k, None)
                    self.journal.save()
                    continue
                try:
                    self.retried += await self._deliver(k, o)
                except BearerRefused as exc:
                    log.warning("sms: %s still owed %s: %s", o.number, k.partition("|")[0], exc)
                    break

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.modem.snapshot(),
            "last_cmgs_ms": self.last_cmgs_ms,
            "last_success_ms": self.last_success_ms,
            "owed": len(self.journal.owed),
            "retried_parts": self.retried,
        }


def build(cfg: SmsConfig, host: BearerHost) -> Bearer:
    return SmsBearer(cfg, host)


PART = BearerPart(name="sms", config=SmsConfig, parse=parse, build=build)
