"""A BeiDou short-message terminal's sentences (the 2.1 protocol, NMEA 0183 framing),
sans-IO: bytes from the terminal in, events out; the host's commands out as bytes.

From the terminal: `$BDICI` its card (number, service interval in seconds,
communication level: how long a message may be), `$BDFKI` the outcome of a command (for
`TXA`: accepted, or why not and how long to wait), `$BDTXR` a message received (from
the platform, or at a command terminal from a subordinate card), `$BDDWR` a position
report (at a command terminal: a subordinate card's). To the terminal: `$CCICA` asks for
the card, `$CCTXA` sends a message (coded as hex: 8-bit data).

A BDS-3 regional terminal sends with `$CCTCQ` and hands over what it receives as
`$BDTCI` (sender, recipient, frequency point, time, coding, content); card information
and feedback are the same sentences. Content is coded as hex (coding 2, "code") both ways.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from drivers.nmea0183 import LineFramer, Reason, Rejected, Sentence, checked, sentence

# The 2.1 protocol's communication levels: the bits one message may carry.
LEVEL_BITS = {1: 110, 2: 408, 3: 628, 4: 848}
CARD_DIGITS = 7


@dataclass(frozen=True, slots=True)
class CardInfo:
    card: str
    interval_s: int  # one message per this, at most (the card's service frequency)
    level: int

    @property
    def max_bytes(self) -> int:
        """What one message may carry as 8-bit data (hex coded)."""
        return LEVEL_BITS.get(self.level, LEVEL_BITS[1]) // 8


class Outcome(enum.StrEnum):
    SENT = "sent"
    WAIT = "interval_not_elapsed"  # the card's interval has not passed
    SILENCED = "no_signal"  # transmission suppressed: no satellite, radio silence
    REFUSED = "not_authorised"  # the card may not send (not authorised, no service)


@dataclass(frozen=True, slots=True)
class Feedback:
    command: str  # "TXA"
    outcome: Outcome
    wait_s: int


@dataclass(frozen=True, slots=True)
class Message:
    sender: str  # the sender's card
    content: bytes


@dataclass(frozen=True, slots=True)
class Position:
    card: str
    lat: float
    lon: float


Event = CardInfo | Feedback | Message | Position | Rejected


def _card(value: str) -> str | None:
    return value if value.isdigit() and 1 <= len(value) <= CARD_DIGITS else None


def _coord(value: str, hemi: str, degree_digits: int) -> float | None:
    try:
        deg = int(value[:degree_digits])
        minutes = float(value[degree_digits:])
    except ValueError:
        return None
    if not 0 <= minutes < 60 or hemi not in ("N", "S", "E", "W"):
        return None
    out = deg + minutes / 60.0
    return -out if hemi in ("S", "W") else out


class BdParser:
    def __init__(self) -> None:
        self._framer = LineFramer()
        self.ignored = 0

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        for s in checked(self._framer, data):
            if isinstance(s, Rejected):
                out.append(s)
                continue
            ev = self._sentence(s)
            if ev is None:
                self.ignored += 1
            else:
                out.append(ev)
        return out

    def _sentence(self, s: Sentence) -> Event | None:
        f = s.fields
        if s.talker != "BD":
            return None
        if s.type == "ICI":
            return _ici(s, f)
        if s.type == "FKI":
            return _fki(s, f)
        if s.type == "TXR":
            return _txr(s, f)
        if s.type == "DWR":
            return _dwr(s, f)
        if s.type == "TCI":
            return _tci(s, f)
        return None


def _bad(s: Sentence, why: str) -> Rejected:
    return Rejected(Reason.MALFORMED, s.raw, why)


def _ici(s: Sentence, f: tuple[str, ...]) -> Event:
    if len(f) < 6 or _card(f[0]) is None or not f[4].isdigit() or not f[5].isdigit():
        return _bad(s, "card information")
    return CardInfo(f[0], int(f[4]), int(f[5]))


def _fki(s: Sentence, f: tuple[str, ...]) -> Event:
    if len(f) < 5 or f[1] not in ("Y", "N") or not f[4].isdigit():
        return _bad(s, "feedback")
    wait = int(f[4][:2]) * 60 + int(f[4][2:]) if len(f[4]) == 4 else int(f[4])
    if f[1] == "Y":
        outcome = Outcome.SENT
    elif wait > 0:
        outcome = Outcome.WAIT
    elif f[3] not in ("0", ""):
        outcome = Outcome.SILENCED
    else:
        outcome = Outcome.REFUSED
    return Feedback(f[0], outcome, wait)


def _txr(s: Sentence, f: tuple[str, ...]) -> Event:
    if len(f) < 5 or _card(f[1]) is None:
        return _bad(s, "message")
    try:
        content = bytes.fromhex(f[4]) if f[2] == "1" else f[4].encode("ascii", "replace")
    except ValueError:
        return _bad(s, "message content is not hex")
    return Message(f[1], content)


def _tci(s: Sentence, f: tuple[str, ...]) -> Event:
    if len(f) < 6 or _card(f[0]) is None:
        return _bad(s, "message")
    try:
        content = bytes.fromhex(f[5]) if f[4] == "2" else f[5].encode("ascii", "replace")
    except ValueError:
        return _bad(s, "message content is not hex")
    return Message(f[0], content)


def _dwr(s: Sentence, f: tuple[str, ...]) -> Event:
    if len(f) < 7 or _card(f[1]) is None:
        return _bad(s, "position report")
    lat, lon = _coord(f[3], f[4], 2), _coord(f[5], f[6], 3)
    if lat is None or lon is None or not -90 <= lat <= 90 or not -180 <= lon <= 180:
        return _bad(s, "position report coordinates")
    return Position(f[1], round(lat, 6), round(lon, 6))


def ask_card() -> bytes:
    return sentence("CCICA,0,00")


def send(card: str, data: bytes) -> bytes:
    """`$CCTXA`: `data` to `card`, normal communication (1), coded as hex (1)."""
    return sentence(f"CCTXA,{card.zfill(CARD_DIGITS)},1,1,{data.hex().upper()}")


def send_bds3(card: str, data: bytes) -> bytes:
    """`$CCTCQ` (BDS-3): `data` to `card`, frequency point 2, no receipt asked (0),
    coded as hex (2), no repeat (0)."""
    return sentence(f"CCTCQ,{card.zfill(CARD_DIGITS)},2,0,2,{data.hex().upper()},0")
