"""A BeiDou terminal on a serial port: the shell around `BdParser`.

At every opening it asks for its card ($CCICA) until the card answers ($BDICI): the
card's number, service interval and message length are what the bearer honours. What
the terminal hands over from other cards (a command terminal ashore hears its fleet's)
is relayed: a position report as `beidou.position`, joined to the boat's MMSI by the
card table and counted in the harbour's recall like an AIS position; a message as
`beidou.message`, or, when it holds a distress word, as a `beidou.distress` incident
shaped like an AIS-SART's (one incident per card, repeats folded).

The card table is the config's `cards` until the platform replaces it (`beidou.cards`),
then the one it sent, kept in `state_dir/beidou-cards-<id>.json`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from drivers.ais.tracker import VesselTracker
from drivers.base import Emit, ShapedDriver
from drivers.beidou.config import MAX_CARDS, BeidouDevice, cards_problem
from drivers.beidou.parse import (
    BdParser,
    CardInfo,
    Event,
    Feedback,
    Message,
    Position,
    ask_card,
    send,
    send_bds3,
)
from drivers.net_link import Link
from drivers.nmea0183 import Rejected
from drivers.part import BearerRefused
from drivers.stream_link import StreamLink
from floor.clock import boottime_ms
from floor.fsutil import write_atomic

log = logging.getLogger(__name__)

BDS3_BYTES = 14_000 // 8
ASK_EVERY_S = 5.0  # the card is asked for again this often until it answers


class BeidouTerminal(ShapedDriver):
    kind = "beidou"

    def __init__(
        self,
        cfg: BeidouDevice,
        *,
        emit: Emit,
        tracker: VesselTracker,
        state_dir: Path,
        room: Callable[[], Awaitable[None]] | None = None,
        tap: Callable[[str, bytes], None] | None = None,
    ) -> None:
        super().__init__(cfg.id, cfg.source, emit=emit, room=room, tap=tap)
        self.cfg = cfg
        self._tracker = tracker
        self._parser = BdParser()
        self._link: StreamLink | None = None
        self._feedback: asyncio.Future[Feedback] | None = None
        self._send_lock = asyncio.Lock()
        self.card: CardInfo | None = None
        self.cards_file = state_dir / f"beidou-cards-{cfg.id}.json"
        self.cards: dict[str, int] = dict(cfg.cards)
        self.cards_from = "config"
        self._load_cards()
        self.last_at: OrderedDict[str, tuple[float, float]] = OrderedDict()  # card -> its last position
        self.relayed = 0
        self.unmapped = 0  # reports from a card the table does not name
        self.messages = 0

    # the card table -------------------------------------------------------------------

    def _load_cards(self) -> None:
        try:
            table = json.loads(self.cards_file.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error(
                "%s: %s unreadable (%s): the config's card table is used", self.name, self.cards_file, exc
            )
            return
        if cards_problem(table) is not None:
            log.error("%s: %s is not a card table: the config's is used", self.name, self.cards_file)
            return
        self.cards, self.cards_from = {str(k): int(v) for k, v in table.items()}, "platform"

    def set_cards(self, table: Mapping[str, int]) -> None:
        """The platform's card table replaces the one in use, now and after a restart."""
        write_atomic(self.cards_file, json.dumps(dict(table), sort_keys=True).encode())
        self.cards, self.cards_from = dict(table), "platform"

    # the link ---------------------------------------------------------------------------

    def _new_stream(self) -> None:
        self._parser = BdParser()

    def _opened(self, link: Link) -> None:
        if isinstance(link, StreamLink):  # serial or TCP (the config refuses UDP)
            self._link = link
            self._ask(link)

    def _ask(self, link: StreamLink) -> None:
        try:
            link.write(ask_card())
        except OSError as exc:
            log.warning("%s: cannot ask the card: %s", self.name, exc)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self._link = None
            if self._feedback is not None and not self._feedback.done():
                self._feedback.set_exception(BearerRefused("no_terminal", f"{self.name}: the link went away"))

    def max_bytes(self) -> int | None:
        """What one message may carry: the card's level says (2.1), or the BDS-3 regional
        service's 14,000 bits; None before the card is known."""
        if self.card is None:
            return None
        return BDS3_BYTES if self.cfg.protocol == "4.0" else self.card.max_bytes

    def ready(self) -> bool:
        """Open, and its card known."""
        return self._link is not None and self.card is not None

    async def transmit(self, card: str, data: bytes, *, timeout_s: float) -> Feedback:
        """One message to `card`; the terminal's answer. BearerRefused when the terminal
        is not there or does not answer."""
        async with self._send_lock:
            link = self._link
            if link is None or self.card is None:
                raise BearerRefused("no_terminal", f"{self.name} is not open or has not told its card")
            loop = asyncio.get_running_loop()
            self._feedback = fut = loop.create_future()
            try:
                link.write(send_bds3(card, data) if self.cfg.protocol == "4.0" else send(card, data))
                return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
            except OSError as exc:
                raise BearerRefused("no_terminal", f"{self.name}: {exc}") from None
            except TimeoutError:
                raise BearerRefused("no_answer", f"{self.name} did not answer in {timeout_s:g} s") from None
            finally:
                self._feedback = None

    # what the terminal says -----------------------------------------------------------

    def _ignored(self) -> int:
        return self._parser.ignored

    def _poll_after(self) -> float | None:
        if self.card is None:
            return ASK_EVERY_S
        return 1.0 if self._tracker.pending(self.dev_id) else None

    def _parse(self, data: bytes, now: int) -> Sequence[Event]:
        return self._parser.feed(data)

    def _poll(self, now: int) -> Sequence[Event]:
        if self.card is None and self._link is not None:
            self._ask(self._link)
        return ()

    def _held(self, now: int) -> Iterable[tuple[str, Mapping[str, Any]]]:
        return self._tracker.due(self.dev_id, now)

    def _handle(self, events: Sequence[Event]) -> None:
        for ev in events:
            self.counters.events += 1
            if isinstance(ev, Rejected):
                self._rejected(ev)
            elif isinstance(ev, CardInfo):
                if ev != self.card:
                    log.info(
                        "%s: card %s, one message per %d s, %d bytes each",
                        self.name,
                        ev.card,
                        ev.interval_s,
                        ev.max_bytes,
                    )
                self.card = ev
            elif isinstance(ev, Feedback):
                fut = self._feedback
                if ev.command in ("TXA", "TCQ") and fut is not None and not fut.done():
                    fut.set_result(ev)
            elif isinstance(ev, Position):
                self._position(ev)
            else:
                self._message(ev)

    def _who(self, card: str) -> dict[str, Any]:
        mmsi = self.cards.get(card) or self.cards.get(card.lstrip("0"))
        if mmsi is None:
            self.unmapped += 1
            return {"card": card, "station": self.dev_id}
        return {"card": card, "mmsi": mmsi, "station": self.dev_id}

    def _position(self, ev: Position) -> None:
        rec = self._who(ev.card) | {"lat": ev.lat, "lon": ev.lon}
        self.last_at[ev.card] = (ev.lat, ev.lon)
        self.last_at.move_to_end(ev.card)
        while len(self.last_at) > MAX_CARDS:
            self.last_at.popitem(last=False)
        if "mmsi" in rec:
            self._tracker.located(rec["mmsi"], ev.lat, ev.lon, boottime_ms(), via="beidou")
        self.relayed += 1
        self._publish("beidou.position", rec)

    def _message(self, ev: Message) -> None:
        text = _text(ev.content)
        rec = self._who(ev.sender) | {"text": text[:200]}
        if (at := self.last_at.get(ev.sender)) is not None:  # where the boat last reported from
            rec["lat"], rec["lon"] = at
        self.messages += 1
        upper = text.upper()
        if any(w in upper for w in self.cfg.distress_words):
            key = ("beidou", ev.sender)
            for kind, data in self._tracker.beacons.offer(
                key, self.dev_id, "beidou.distress", rec, state="distress", now=boottime_ms()
            ):
                self._publish(kind, data)
            return
        self._publish("beidou.message", rec)

    def snapshot(self) -> dict[str, Any]:
        card = self.card
        return {
            **super().snapshot(),
            "card": None if card is None else card.card,
            "interval_s": None if card is None else card.interval_s,
            "max_bytes": self.max_bytes(),
            "cards": len(self.cards),
            "cards_from": self.cards_from,
            "relayed": self.relayed,
            "unmapped": self.unmapped,
            "messages": self.messages,
        }


def _text(content: bytes) -> str:
    """A message's content as words: GB18030 (the terminals' Chinese), else hex."""
    try:
        text = content.decode("gb18030")
    except UnicodeDecodeError:
        return content.hex()
    return text if text.isprintable() else content.hex()
