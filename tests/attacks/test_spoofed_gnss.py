"""Threat: a spoofed GNSS signal (a cheap SDR near the harbour). Unauthenticated GNSS time
may set an untrusted clock, but may not move one that NTP synchronised; and a gateway
that booted before NTP synced trusts its clock once the system says so."""

from __future__ import annotations

import time
from pathlib import Path

from floor.clock import GNSS_NTP_BOUND_MS, Clock, TimeQuality, boottime_ms


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tq(clock: Clock) -> TimeQuality:
    """The quality now (a call, so a type checker does not carry an earlier assert over)."""
    return clock.quality


def test_gnss_cannot_move_an_ntp_synchronised_clock(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    clock = Clock(sync_flag=flag)
    assert tq(clock) == TimeQuality.NTP
    tb = boottime_ms()
    spoofed = now_ms() + 90 * 86_400_000  # three months ahead: plausible, and wrong
    assert not clock.observe_gnss(spoofed, tb)
    assert tq(clock) == TimeQuality.NTP and clock.gnss_disagreements == 1
    assert abs((clock.unix_ms() or 0) - now_ms()) < 1000  # the clock did not move
    # the control: a receiver that agrees with NTP (within the bound) is taken
    assert clock.observe_gnss(now_ms() + GNSS_NTP_BOUND_MS // 4, boottime_ms())
    assert tq(clock) == TimeQuality.GNSS
    # and once GNSS is the source, a later jump is still held to NTP
    assert not clock.observe_gnss(now_ms() - 3_600_000, boottime_ms())


def test_an_unsynchronised_clock_still_takes_gnss(tmp_path: Path) -> None:
    clock = Clock(sync_flag=tmp_path / "absent")
    assert tq(clock) == TimeQuality.PERSISTED
    assert clock.observe_gnss(now_ms() + 86_400_000, boottime_ms())  # nothing better to go by
    assert tq(clock) == TimeQuality.GNSS


def test_a_clock_synchronised_after_boot_is_trusted_on_the_next_look(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    clock = Clock(sync_flag=flag)
    assert not clock.trusted and not clock.refresh()
    flag.touch()  # timesyncd reached its server, minutes after boot
    assert clock.refresh() and clock.trusted and tq(clock) == TimeQuality.NTP
    assert not clock.refresh()  # once
