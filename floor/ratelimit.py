"""One token bucket for every rate limit of untrusted traffic (rejections reported,
strangers reported, incidents raised): `burst` at once, then one more every `every`."""

from __future__ import annotations


class TokenBucket:
    """Time is whatever `now` is measured in (seconds, boot-time ms), the same throughout."""

    __slots__ = ("at", "burst", "every", "tokens")

    def __init__(self, burst: float, every: float, now: float) -> None:
        self.burst, self.every = float(burst), every
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        """A token, if there is one (refilled for the time since the last call)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) / self.every)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
