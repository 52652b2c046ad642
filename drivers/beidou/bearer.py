"""BeiDou as a bearer (`[beidou]`): a life-safety message to the platform's card through
the terminal, when the broker has not acknowledged it.

The card allows one message per its service interval. Every send is spaced by at least
that from the one before; when the next is allowed is saved before a sentence is written
(`state_dir/beidou.json`), so neither a restart nor a failed send brings it forward. A
send the terminal refuses ($BDFKI) is refused to the fallback with its cause
(`interval_not_elapsed`: the terminal's own wait is honoured too; `no_signal`;
`not_authorised`), and the fallback tries again when the bearer is ready.

What goes: the compact signed form where the card's message length holds it (a BDS-3
card's does), else the short form followed by the gateway key's bare signature over it
where that fits (a level 4 card), else the short form alone, whose only authentication is
the card number the BeiDou system stamps on it (floor/compact.py,
docs/envelope-and-topics.md). The words (`edge/bearers/readable.py`)
for the duty cards are owed and sent one per interval once no alarm is waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.beidou.config import BeidouConfig
from drivers.beidou.parse import Outcome
from drivers.beidou.terminal import BeidouTerminal
from drivers.part import BearerRefused
from floor.compact import SIGNATURE_BYTES, short_to_sign, shortened
from floor.fsutil import write_atomic

log = logging.getLogger(__name__)

GRACE_S = 2.0  # words go only after the slot has been free this long: an alarm goes first
KEEP_DONE = 1024  # messages the platform's card has, never sent to it again
MAX_OWED = 64  # words owed to duty cards (the oldest are dropped past it)


class BeidouBearer:
    name = "beidou"

    def __init__(
        self,
        cfg: BeidouConfig,
        terminal: BeidouTerminal,
        state_dir: Path,
        signature: Callable[[bytes], bytes],
    ) -> None:
        self.cfg = cfg
        self._signature = signature
        self.terminal = terminal
        self._file = state_dir / "beidou.json"
        self.next_at = 0.0  # unix s: no message before this
        self.done: OrderedDict[str, float] = OrderedDict()
        self.owed: list[tuple[str, str, str]] = []  # (key, card, words) for duty cards
        self.cause: str | None = None  # why the last send failed (cleared by a success)
        self.sent = {"signed": 0, "short_signed": 0, "short": 0, "words": 0}
        self.last_success_ms: int | None = None
        self._load()

    # state ------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            doc = json.loads(self._file.read_bytes())
            self.next_at = float(doc["next_at"])
            self.done.update((str(k), float(v)) for k, v in doc.get("done", []))
            self.owed = [(str(k), str(c), str(w)) for k, c, w in doc.get("owed", [])]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # not knowing when the last message went, wait a whole longest interval
            self.next_at = time.time() + 3600.0
            log.error("beidou: %s unreadable (%s): no message for an hour", self._file, exc)

    def _save(self) -> None:
        doc = {"next_at": self.next_at, "done": list(self.done.items()), "owed": self.owed}
        try:
            write_atomic(self._file, json.dumps(doc).encode())
        except OSError as exc:
            log.error("beidou: cannot save %s: %s", self._file, exc.strerror)

    # Bearer -----------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.terminal.ready() and time.time() >= self.next_at

    def cost(self, data: bytes, text: str | None) -> int:
        return 1 + (len(self.cfg.duty_cards) if text else 0)

    def form(self, data: bytes) -> tuple[str, bytes]:
        """What goes for the compact signed `data`: itself where the card holds it, else
        the short form signed (its CBOR and a bare signature), else the short form alone;
        BearerRefused when not even that fits."""
        limit = self.terminal.max_bytes() or self.cfg.max_bytes or 0
        if len(data) <= limit:
            return "signed", data
        short = shortened(data)
        if len(short) + SIGNATURE_BYTES <= limit:
            return "short_signed", short + self._signature(short_to_sign(short))
        if len(short) <= limit:
            return "short", short
        raise BearerRefused("too_long", f"{len(short)} bytes even in the short form; the card takes {limit}")

    async def send(self, key: str, data: bytes, text: str | None) -> int:
        if key in self.done:
            return 0  # the platform's card has it (a restart before the cursor was saved)
        form, body = self.form(data)
        await self._transmit(self.cfg.platform_card, body)
        self.sent[form] += 1
        self.done[key] = time.time()
        while len(self.done) > KEEP_DONE:
            self.done.popitem(last=False)
        if text:
            self._owe(key, text)
        self._save()
        return 1

    async def tell(self, key: str, text: str) -> int:
        self._owe(key, text)
        self._save()
        return 0  # sent by `run`, one per interval

    def _owe(self, key: str, text: str) -> None:
        self.owed += [(key, card, text) for card in self.cfg.duty_cards]
        del self.owed[:-MAX_OWED]

    async def _transmit(self, card: str, body: bytes) -> None:
        """One message, within the card's interval; BearerRefused with the cause."""
        now = time.time()
        info = self.terminal.card
        if info is None or not self.terminal.ready():
            raise BearerRefused("no_terminal", "the terminal is not open or has not told its card")
        if now < self.next_at:
            raise BearerRefused("interval_not_elapsed", f"next message in {self.next_at - now:.0f} s")
        self.next_at = now + info.interval_s
        self._save()  # before the sentence goes: a restart never brings the next one forward
        fb = await self.terminal.transmit(card, body, timeout_s=self.cfg.feedback_s)
        if fb.outcome is Outcome.SENT:
            self.cause = None
            self.last_success_ms = time.time_ns() // 1_000_000
            return
        if fb.outcome is Outcome.WAIT:
            self.next_at = max(self.next_at, time.time() + fb.wait_s)
            self._save()
        self.cause = fb.outcome.value
        raise BearerRefused(fb.outcome.value, f"the terminal answered {fb.outcome.value}")

    async def run(self) -> None:
        """The words owed to duty cards, one per interval, once the slot has been free
        `GRACE_S` (an alarm waiting takes it first)."""
        while True:
            await asyncio.sleep(0.5)
            if not self.owed or not self.ready() or time.time() < self.next_at + GRACE_S:
                continue
            key, card, words = self.owed[0]
            body = _words(words, self.terminal.max_bytes() or 0)
            try:
                await self._transmit(card, body)
            except BearerRefused as exc:
                log.warning("beidou: words of %s to %s not sent: %s", key, card, exc)
                continue
            self.owed.pop(0)
            self.sent["words"] += 1
            self._save()

    def snapshot(self) -> dict[str, Any]:
        card = self.terminal.card
        cause: str | None
        if not self.terminal.ready():
            state, cause = "down", self.cause or "no_terminal"
        else:
            state, cause = ("ready", None) if self.cause is None else ("failing", self.cause)
        return {
            "state": state,
            "cause": cause,
            "card": None if card is None else card.card,
            "interval_s": None if card is None else card.interval_s,
            "max_bytes": self.terminal.max_bytes(),
            "next_in_s": max(0.0, round(self.next_at - time.time(), 1)),
            "sent_forms": dict(self.sent),
            "owed_words": len(self.owed),
            "last_success_ms": self.last_success_ms,
        }


def _words(text: str, limit: int) -> bytes:
    """`text` in GB18030, cut on a character's boundary to what one message carries."""
    out = text.encode("gb18030")
    while len(out) > limit and text:
        text = text[:-1]
        out = text.encode("gb18030")
    return out
