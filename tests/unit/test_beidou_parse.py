"""The BeiDou terminal's sentences, read and written without a port.

What the gateway writes is checked by a reader written here apart from the project's
(its own checksum, its own field split), so a fault shared by the writer and the
project's reader cannot hide."""

from __future__ import annotations

import cbor2

from drivers.beidou.parse import (
    BdParser,
    CardInfo,
    Feedback,
    Message,
    Outcome,
    Position,
    ask_card,
    send,
    send_bds3,
)
from drivers.nmea0183 import Rejected, sentence
from floor.compact import short, unshort
from tests.support.beidou_reader import Sent, independent, sends


def test_what_the_gateway_writes_reads_back_independently() -> None:
    talker, kind, fields = independent(ask_card())
    assert (talker, kind) == ("CC", "ICA")
    data = bytes(range(0, 40))
    talker, kind, fields = independent(send("12345", data))
    assert (talker, kind) == ("CC", "TXA")
    assert fields[0] == "0012345" and fields[1:3] == ["1", "1"]
    assert bytes.fromhex(fields[3]) == data
    talker, kind, fields = independent(send_bds3("12345", data))
    assert (talker, kind) == ("CC", "TCQ")
    assert sends(send("7", b"\x01") + send_bds3("8", b"\x02")) == [
        Sent("TXA", "0000007", b"\x01"),
        Sent("TCQ", "0000008", b"\x02"),
    ]


def test_a_bds3_terminals_message_is_read() -> None:
    out = BdParser().feed(
        sentence("BDTCI,0300112,0243561,2,083015,2,534F53") + sentence("BDTCI,03,1,2,0,2,XYZ")
    )
    assert out[0] == Message("0300112", b"SOS")
    assert isinstance(out[1], Rejected)


def test_card_feedback_message_and_position_are_read() -> None:
    p = BdParser()
    out = p.feed(
        sentence("BDICI,0243561,0,0,3,60,2,N,0")
        + sentence("BDFKI,TXA,Y,0,0,0000")
        + sentence("BDFKI,TXA,N,0,0,0045")
        + sentence("BDFKI,TXA,N,0,1,0000")
        + sentence("BDFKI,TXA,N,0,0,0000")
        + sentence("BDTXR,1,0300112,1,,48656C6C6F")
        + sentence("BDDWR,1,0300112,,2230.5000,N,11400.2500,E")
    )
    assert out[0] == CardInfo("0243561", 60, 2)
    assert out[0].max_bytes == 51
    assert [o.outcome for o in out[1:5] if isinstance(o, Feedback)] == [
        Outcome.SENT,
        Outcome.WAIT,
        Outcome.SILENCED,
        Outcome.REFUSED,
    ]
    assert out[2] == Feedback("TXA", Outcome.WAIT, 45)
    assert out[5] == Message("0300112", b"Hello")
    assert out[6] == Position("0300112", 22.508333, 114.004167)


def test_hostile_and_broken_sentences_are_counted_not_fatal() -> None:
    p = BdParser()
    junk = (
        b"\x00\xff garbage\r\n"
        + b"$BDICI,0243561,0,0,3,60,2*00\r\n"  # bad checksum
        + sentence("BDICI,notacard,0,0,3,60,2")
        + sentence("BDTXR,1,0300112,1,,ZZ")
        + sentence("BDDWR,1,0300112,,9930.0,N,11400.0,E")
        + sentence("BDFKI,TXA,maybe,0,0,0000")
        + b"$BDTXR,1,03001"  # truncated: held until the line ends
        + b"\r\n"
        + sentence("GPGGA,1,2,3")
    )
    out = p.feed(junk)
    assert out and all(isinstance(o, Rejected) for o in out)
    assert p.ignored == 1
    again = p.feed(sentence("BDICI,0243561,0,0,3,60,2"))
    assert again == [CardInfo("0243561", 60, 2)]


def test_the_short_form_fits_a_level_two_card_and_reads_back() -> None:
    payload = {
        "ep": [7, "x" * 43],
        "seq": 123456,
        "kind": "sos.alarm",
        "recs": [{"d": {"device": "sos-0042", "lat": 22.54321, "lon": 114.05432}}],
    }
    form = short(payload)
    raw = cbor2.dumps(form)
    assert len(raw) <= 408 // 8  # a level 2 card: 51 bytes
    back = unshort(cbor2.loads(raw))
    assert back == {
        "ep": 7,
        "seq": 123456,
        "kind": "sos.alarm",
        "who": "sos-0042",
        "lat": 22.54321,
        "lon": 114.05432,
    }
