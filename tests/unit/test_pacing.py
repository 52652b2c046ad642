"""The backlog's delay-based window, fed round-trip samples (sans-IO)."""

from __future__ import annotations

import pytest

from edge.pacing import BASE_BUCKET_S, BASE_BUCKETS, BacklogWindow

RTT = 0.010  # a 10 ms link
TARGET = 0.005


def acks(w: BacklogWindow, n: int, rtt: float, now: float, spacing: float = 0.001) -> float:
    for _ in range(n):
        now += spacing
        w.sample(rtt, now)
    return now


def test_an_idle_link_opens_the_window_to_the_session_cap() -> None:
    w = BacklogWindow(max_window=64, target_s=TARGET)
    assert w.allowed == 2  # starts small: nothing known about the link yet
    acks(w, 200, RTT, 0.0)
    assert w.allowed == 64


def test_slow_start_doubles_per_round_trip_until_the_first_cut() -> None:
    w = BacklogWindow(max_window=1000, target_s=TARGET)
    acks(w, 2, RTT, 0.0)  # one window's worth of acknowledgements
    assert w.allowed == 4
    acks(w, 4, RTT, 1.0)
    assert w.allowed == 8


def test_a_queue_halves_the_window_once_per_round_trip() -> None:
    w = BacklogWindow(max_window=64, target_s=TARGET)
    now = acks(w, 200, RTT, 0.0)
    assert w.allowed == 64
    # the broker's side backs up: every PUBACK now comes 50 ms late
    now = acks(w, 8, RTT + 0.050, now, spacing=0.0001)  # within one round trip: one cut
    assert w.allowed == 32
    acks(w, 200, RTT + 0.050, now, spacing=0.02)
    assert w.allowed == 2  # never below the floor: the drain always progresses


def test_after_a_cut_the_window_grows_by_one_per_window_of_acks() -> None:
    w = BacklogWindow(max_window=64, target_s=TARGET)
    now = acks(w, 200, RTT, 0.0)
    now = acks(w, 8, RTT + 0.050, now, spacing=0.0001)
    assert w.allowed == 32
    now = acks(w, 4, RTT, now)  # the four-sample filter sees the queue gone
    start = w.window
    acks(w, 32, RTT, now)
    assert w.window == pytest.approx(start + 1, abs=0.05)


def test_one_late_ack_is_jitter_not_a_queue() -> None:
    w = BacklogWindow(max_window=64, target_s=TARGET)
    now = acks(w, 200, RTT, 0.0)
    w.sample(RTT + 0.200, now + 0.001)
    assert w.allowed == 64


def test_the_base_delay_follows_a_link_that_got_longer() -> None:
    w = BacklogWindow(max_window=64, target_s=TARGET)
    now = acks(w, 200, RTT, 0.0)
    # the modem hands over to a cell 80 ms further away: at first that looks like a queue...
    now = acks(w, 50, 0.090, now, spacing=0.1)
    assert w.allowed < 64
    # ...until the short samples age out of the history, and the new path is the base
    now = acks(w, int(BASE_BUCKETS * BASE_BUCKET_S / 0.1) + 10, 0.090, now, spacing=0.1)
    assert w.base_delay() == pytest.approx(0.090)
    acks(w, 2000, 0.090, now)
    assert w.allowed == 64


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="max_window"):
        BacklogWindow(max_window=0, target_s=TARGET)
    with pytest.raises(ValueError, match="target_s"):
        BacklogWindow(max_window=8, target_s=0)
