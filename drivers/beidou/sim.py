"""A simulated BeiDou short-message terminal on the far side of a pty (tests, demo).

It answers `$CCICA` with its card (`$BDICI`) and each `$CCTXA`/`$CCTCQ` with `$BDFKI`:
sent, or refused because the card's interval has not elapsed (with the wait), because
there is no signal, or because the card is not authorised, as a real terminal's card
would be by the BeiDou system. What it took is kept, with when; a send that came before
the interval was up is counted (`early`) whether or not it was refused. A command
terminal's fleet is simulated by `report` and `message`: a subordinate card's position
report (`$BDDWR`) and message (`$BDTXR`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from drivers.nmea0183 import sentence
from drivers.pty_sim import PtyServer


@dataclass(frozen=True, slots=True)
class Taken:
    card: str  # to whom
    content: bytes
    at: float  # unix s


@dataclass
class SimTerminal:
    card: str = "0243561"
    interval_s: int = 60
    level: int = 3  # 628 bits: 78 bytes a message
    signal: bool = True
    authorised: bool = True
    sent: list[Taken] = field(default_factory=list)
    asked: int = 0  # $CCICA heard
    early: int = 0  # sends written before the interval was up
    written: list[str] = field(default_factory=list)  # every sentence the host wrote
    raw: bytearray = field(default_factory=bytearray)  # every byte the host wrote
    last_tx: float = -1e18
    _line: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> bytes:
        self.raw += data
        out = bytearray()
        for b in data:
            if b in (0x0D, 0x0A):
                if self._line:
                    out += self._sentence(self._line.decode("ascii", "replace"))
                self._line.clear()
            elif len(self._line) < 2048:
                self._line.append(b)
        return bytes(out)

    def _sentence(self, line: str) -> bytes:
        self.written.append(line)
        body = line[1:].split("*", maxsplit=1)[0]
        f = body.split(",")
        if f[0] == "CCICA":
            self.asked += 1
            return sentence(f"BDICI,{self.card},0,0,3,{self.interval_s},{self.level},N,0")
        if f[0] in ("CCTXA", "CCTCQ"):
            content = f[4] if f[0] == "CCTXA" else f[5]
            return self._send(f[0][2:], f[1], bytes.fromhex(content))
        return b""

    def _send(self, command: str, card: str, content: bytes) -> bytes:
        now = time.time()
        wait = self.last_tx + self.interval_s - now
        if wait > 0:
            self.early += 1
            w = int(wait + 0.999)
            return sentence(f"BDFKI,{command},N,0,0,{w // 60:02d}{w % 60:02d}")
        if not self.authorised:
            return sentence(f"BDFKI,{command},N,0,0,0000")
        if not self.signal:
            return sentence(f"BDFKI,{command},N,0,1,0000")
        self.last_tx = now
        self.sent.append(Taken(card, content, now))
        return sentence(f"BDFKI,{command},Y,0,0,0000")

    @staticmethod
    def report(card: str, lat: float, lon: float) -> bytes:
        """A subordinate card's position report, as a command terminal hands it over."""
        la, lo = abs(lat), abs(lon)
        ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
        lat_s = f"{int(la):02d}{(la - int(la)) * 60:07.4f}"
        lon_s = f"{int(lo):03d}{(lo - int(lo)) * 60:07.4f}"
        return sentence(f"BDDWR,1,{card},,{lat_s},{ns},{lon_s},{ew}")

    @staticmethod
    def message(card: str, text: str) -> bytes:
        """A message from `card` (GB18030 words, coded as hex)."""
        return sentence(f"BDTXR,1,{card},1,,{text.encode('gb18030').hex().upper()}")


class PtyTerminal(PtyServer):
    """A SimTerminal serving a pty master in a thread; `inject` writes its own output."""

    def __init__(self, master: int, terminal: SimTerminal | None = None) -> None:
        self.terminal = terminal or SimTerminal()
        super().__init__(master, self.terminal.feed)
