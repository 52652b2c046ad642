"""A BeiDou terminal's config: the `[[devices]] kind = "beidou"` entry (the terminal) and
the `[beidou]` section (the bearer through it), and what a card table may hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from drivers.beidou.parse import CARD_DIGITS, LEVEL_BITS
from floor.config import BearerConfig, DeviceConfig, NetSource, Section, bearer_basics, source
from floor.errors import N_, Problem

if TYPE_CHECKING:
    from collections.abc import Mapping

PROTOCOLS = ("2.1", "4.0")  # the 2.1 protocol ($CCTXA), BDS-3 regional terminals ($CCTCQ)
# What a boat's terminal puts in a message when its distress key is pressed (the preset
# texts of the terminals in use); a message holding one is a distress, not a chat.
DISTRESS_WORDS = ("SOS", "MAYDAY", "求救", "遇险", "呼救")
MAX_CARDS = 10_000


def card_problem(card: object) -> Problem | None:
    """Why `card` is not a BeiDou card number (1 to 7 digits), or None."""
    if not isinstance(card, str) or not card.isdigit() or not 1 <= len(card) <= CARD_DIGITS:
        return Problem(N_("{card} is not a card number (1 to 7 digits)"), {"card": repr(card)})
    return None


def cards_problem(table: object) -> Problem | None:
    """Why `table` is not a card-to-MMSI table ({"0300112" = 412000001, ...}), or None."""
    if not isinstance(table, dict) or len(table) > MAX_CARDS:
        return Problem(N_("expected a table of at most {n} card number = MMSI"), {"n": MAX_CARDS})
    for card, mmsi in table.items():
        if (problem := card_problem(card)) is not None:
            return problem
        if isinstance(mmsi, bool) or not isinstance(mmsi, int) or not 100_000_000 <= mmsi <= 999_999_999:
            return Problem(
                N_("card {card}: {mmsi} is not an MMSI (9 digits)"), {"card": card, "mmsi": repr(mmsi)}
            )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class BeidouDevice(DeviceConfig):
    kind: Literal["beidou"] = "beidou"
    protocol: str = "2.1"
    cards: Mapping[str, int] = field(default_factory=dict)  # subordinate card -> the boat's MMSI
    distress_words: tuple[str, ...] = DISTRESS_WORDS


def parse_device(sec: Section, dev_id: str) -> BeidouDevice:
    cards = sec.raw("cards") or {}
    if (problem := cards_problem(cards)) is not None:
        raise sec.error("cards", problem)
    words = sec.str_list("distress_words", list(DISTRESS_WORDS))
    # a terminal is quiet until a message or a report comes: silence is normal
    src = source(sec, default_baud=115200, default_silence=3600.0)
    if isinstance(src, NetSource) and src.scheme == "udp":
        raise sec.error("url", N_("a terminal is written to: a serial port or tcp://, not udp://"))
    return BeidouDevice(
        id=dev_id,
        source=src,
        protocol=sec.choice("protocol", PROTOCOLS, "2.1"),
        cards={str(k): int(v) for k, v in cards.items()},
        distress_words=tuple(w.upper() for w in words if w),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BeidouConfig(BearerConfig):
    name: ClassVar[str] = "beidou"
    device: str = ""  # the [[devices]] entry of kind "beidou" it sends through; empty: off
    platform_card: str = ""  # the platform's card: every message, compact (signed where it fits)
    duty_cards: tuple[str, ...] = ()  # people's terminals: every message in words
    level: int = 0  # the card's communication level as issued (1-4; 0: not said)
    max_sends_per_hour: int = 60  # within the card's own interval, which always holds
    feedback_s: float = 10.0  # a send the terminal has not answered ($BDFKI) this long: failed

    @property
    def enabled(self) -> bool:
        return bool(self.device)

    @property
    def per_hour(self) -> int:
        return self.max_sends_per_hour

    @property
    def uses_device(self) -> str | None:
        return self.device or None

    @property
    def max_bytes(self) -> int | None:
        """What one message may carry at the configured level (None: not said)."""
        return LEVEL_BITS[self.level] // 8 if self.level else None


_D = BeidouConfig()


def parse_bearer(t: Section) -> BeidouConfig:
    cfg = BeidouConfig(
        **bearer_basics(t, _D),
        device=t.text("device", _D.device),
        platform_card=t.text("platform_card", _D.platform_card),
        duty_cards=t.str_list("duty_cards", []),
        level=t.integer("level", _D.level, lo=0, hi=max(LEVEL_BITS)),
        max_sends_per_hour=t.integer("max_sends_per_hour", _D.max_sends_per_hour, lo=1, hi=3600),
        feedback_s=t.number("feedback_s", _D.feedback_s, lo=1.0),
    )
    for key, cards in (("platform_card", (cfg.platform_card,)), ("duty_cards", cfg.duty_cards)):
        for card in cards:
            if (card or key == "duty_cards") and (problem := card_problem(card)) is not None:
                raise t.error(key, problem)
    if cfg.enabled and not cfg.platform_card:
        raise t.error("platform_card", N_("is required when device is set: the platform's card number"))
    t.done()
    return cfg
