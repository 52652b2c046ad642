"""A reader of BeiDou terminal sentences written here apart from the project's parser
(its own line pattern, its own checksum, its own field split and content decoding), so a
fault shared by the gateway's writer and its reader cannot hide."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(rb"^\$([A-Z]{2})([A-Z]{3}),([^*]*)\*([0-9A-F]{2})\r\n$")


def independent(raw: bytes) -> tuple[str, str, list[str]]:
    """(talker, sentence type, fields) of one whole sentence, its checksum checked."""
    m = _LINE.match(raw)
    assert m, raw
    body = raw[1 : raw.index(b"*")]
    total = 0
    for b in body:
        total ^= b
    assert int(m.group(4), 16) == total, raw
    return m.group(1).decode(), m.group(2).decode(), m.group(3).decode().split(",")


@dataclass(frozen=True)
class Sent:
    command: str  # "TXA" or "TCQ"
    card: str
    content: bytes


def sends(written: bytes) -> list[Sent]:
    """Every message the host asked the terminal to send in `written` (a byte log)."""
    out = []
    for line in written.split(b"\r\n"):
        if not line:
            continue
        talker, kind, f = independent(line + b"\r\n")
        assert talker == "CC", line
        if kind == "TXA":
            assert f[1] == "1" and f[2] == "1", line  # normal communication, coded as hex
            out.append(Sent(kind, f[0], bytes.fromhex(f[3])))
        elif kind == "TCQ":
            assert f[3] == "2", line  # coded as hex
            out.append(Sent(kind, f[0], bytes.fromhex(f[4])))
        else:
            assert kind == "ICA", line
    return out
