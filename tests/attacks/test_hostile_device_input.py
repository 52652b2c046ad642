"""Threat: a hostile or broken device on a serial port or the LAN (a spoofing GNSS
receiver, a noisy cable): a sentence with a valid checksum and any fields is a fix, no
fix or a counted `Rejected`, never an exception (which would restart the driver and lose
the good fixes of the same read)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.gnss.parse import Fix, NmeaParser, NoFix
from drivers.gnss.sim import sentence
from drivers.nmea0183 import Reason, Rejected

GNSS_TYPES = ("RMC", "GGA", "GNS", "GLL", "VTG", "GSA", "ZDA", "GSV")
# characters a field of a real sentence is made of, and some it never is
field = st.text(alphabet="0123456789.-+ENSWAVDMKTe,x", max_size=14).map(lambda s: s.replace(",", ""))


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(("GP", "GN", "BD", "GL")), st.sampled_from(GNSS_TYPES), st.lists(field, max_size=20))
def test_any_checksummed_gnss_sentence_is_an_event_or_a_rejection(
    talker: str, kind: str, fields: list[str]
) -> None:
    line = sentence(",".join([talker + kind, *fields]))
    parser = NmeaParser()
    events = parser.feed(line, now=0) + parser.flush()
    assert all(isinstance(e, Fix | NoFix | Rejected) for e in events)


def test_a_malformed_time_with_a_good_checksum_is_rejected_and_the_fixes_around_it_kept() -> None:
    good = sentence("GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    bad = sentence("GPRMC,12:35:19,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
    later = sentence("GPGGA,123521.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    parser = NmeaParser()
    events = parser.feed(good + bad + later, now=0) + parser.flush()
    assert [e.reason for e in events if isinstance(e, Rejected)] == [Reason.BAD_VALUE]
    assert len([e for e in events if isinstance(e, Fix)]) == 2
