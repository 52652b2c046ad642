"""The modem's AT dialogue as a sans-IO reader: the same events however the bytes are
split, unsolicited codes set apart from answers, and never an exception on garbage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.modem import at

SESSION = (
    b"\r\nOK\r\n"
    b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
    b'\r\n+CMTI: "SM",3\r\n'
    b"\r\n> "
    b"\r\n+CMGS: 17\r\n\r\nOK\r\n"
    b"\r\n+CREG: 2\r\n"
    b"\r\n+CMS ERROR: 21\r\n"
)
EXPECTED = [
    at.Line("OK"),
    at.Line("+CSQ: 21,99"),
    at.Line("OK"),
    at.Unsolicited('+CMTI: "SM",3'),
    at.Prompt(),
    at.Line("+CMGS: 17"),
    at.Line("OK"),
    at.Unsolicited("+CREG: 2"),
    at.Line("+CMS ERROR: 21"),
]


def test_every_split_gives_the_same_events() -> None:
    assert at.AtReader().feed(SESSION) == EXPECTED
    for cut in range(len(SESSION)):
        r = at.AtReader()
        assert r.feed(SESSION[:cut]) + r.feed(SESSION[cut:]) == EXPECTED, cut
    r = at.AtReader()
    assert [ev for i in range(len(SESSION)) for ev in r.feed(SESSION[i : i + 1])] == EXPECTED


def test_what_each_answer_means() -> None:
    assert at.final("OK") == at.Final(True)
    assert at.final("+CMS ERROR: 21") == at.Final(False, at.Reason.CMS_ERROR, "+CMS ERROR: 21")
    assert at.final("+CME ERROR: 10") == at.Final(False, at.Reason.CME_ERROR, "+CME ERROR: 10")
    assert at.final("ERROR") == at.Final(False, at.Reason.ERROR, "ERROR") and at.final("+CSQ: 1,2") is None
    assert at.signal_dbm(["+CSQ: 21,99"]) == (True, -71) and at.signal_dbm(["+CSQ: 99,99"]) == (True, None)
    assert at.registration(["+CREG: 0,5"]) == 5 and at.registration([]) is None
    assert at.message_reference(["+CMGS: 17"]) == 17 and at.sim_ready(["+CPIN: READY"])


def test_a_line_without_an_end_is_dropped_not_kept() -> None:
    r = at.AtReader()
    assert r.feed(b"x" * (at.MAX_LINE + 1)) == []
    assert r.feed(b"\r\nOK\r\n") == [at.Line("OK")]


@given(st.binary(max_size=512))
def test_garbage_is_events_or_nothing(data: bytes) -> None:
    events = at.AtReader().feed(data)
    assert all(isinstance(ev, at.Line | at.Prompt | at.Unsolicited) for ev in events)
