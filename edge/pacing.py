"""How much of an outage's backlog may be in flight: a delay-based window (sans-IO).

Theory of operation: the backlog (telemetry from before this session) is scavenger
traffic, the way LEDBAT (RFC 6817) treats bulk transfers: it should use the link
when the link is idle and get out of the way as soon as it builds a queue, because
a life-safety message published now waits behind every byte already in flight on
the same TCP connection. A fixed window of 64 messages of 10 KiB is 640 KiB ahead of
an alarm; on a 1 Mbit/s uplink that is five seconds.

Every PUBACK gives a round-trip sample. The lowest sample of the recent past is the
base delay (the link with empty queues); the lowest of the last four samples above
it is queueing (one late PUBACK is jitter, four are a queue). While the
queueing stays under `target_s` the window grows by one message per window's worth
of acknowledgements (additive increase, as TCP's congestion avoidance), or doubles
per round trip until the first time it is cut (slow start, so a fresh session on
a long link is not held at two messages for a hundred round trips); above it the
window is halved, at most once per round trip. The window never goes below
`min_window` (the drain always progresses) nor above `max_window` (the session's
in-flight cap). Live traffic is never held by this window, only the backlog.
"""

from __future__ import annotations

from collections import deque

BASE_BUCKET_S = 1.0  # the base delay is the minimum over a few of these
BASE_BUCKETS = 10  # RFC 6817 keeps minutes; a gateway's link changes faster (cell handover)
CURRENT_FILTER = 4  # the current delay is the lowest of the last few samples (RFC 6817's filter)


class BacklogWindow:
    """The number of backlog messages allowed in flight, from PUBACK round trips."""

    def __init__(self, *, max_window: int, target_s: float, min_window: int = 2) -> None:
        if max_window < 1 or target_s <= 0:
            raise ValueError("max_window must be >= 1 and target_s > 0")
        self.max_window = max_window
        self.min_window = min(min_window, max_window)
        self.target_s = target_s
        self.window = float(self.min_window)
        self._buckets: deque[tuple[float, float]] = deque()  # (bucket start, lowest rtt in it)
        self._recent: deque[float] = deque(maxlen=CURRENT_FILTER)
        self._last_cut = float("-inf")
        self._slow_start = True
        self.queueing_s = 0.0  # the latest estimate, for status and benchmarks
        self.in_flight = 0  # backlog messages sent and not yet answered (kept by the publisher)

    @property
    def allowed(self) -> int:
        return int(self.window)

    def base_delay(self) -> float | None:
        return min((rtt for _, rtt in self._buckets), default=None)

    def sample(self, rtt_s: float, now: float) -> None:
        """A PUBACK arrived `rtt_s` after its PUBLISH went out; `now` is monotonic."""
        if rtt_s < 0:
            return
        self._remember(rtt_s, now)
        base = self.base_delay()
        if base is None:  # cannot be: one was just remembered
            return
        self._recent.append(rtt_s)
        self.queueing_s = min(self._recent) - base  # one late PUBACK is noise, not a queue
        if self.queueing_s <= self.target_s:
            grow = 1.0 if self._slow_start else 1.0 / self.window
            self.window = min(float(self.max_window), self.window + grow)
        elif now - self._last_cut >= rtt_s:
            # once per round trip: the acks that follow were queued behind the same excess
            self._last_cut = now
            self._slow_start = False
            self.window = max(float(self.min_window), self.window / 2.0)

    def _remember(self, rtt_s: float, now: float) -> None:
        buckets = self._buckets
        if buckets and now - buckets[-1][0] < BASE_BUCKET_S:
            start, low = buckets[-1]
            if rtt_s < low:
                buckets[-1] = (start, rtt_s)
        else:
            buckets.append((now, rtt_s))
            while len(buckets) > BASE_BUCKETS:
                buckets.popleft()
