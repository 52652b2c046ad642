"""Per-driver counters: every rejected input is counted by reason, never silently dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class DriverCounters:
    state: str = "starting"
    opened: int = 0
    gone: int = 0
    silent: int = 0
    bytes: int = 0
    events: int = 0
    ignored: int = 0  # well-formed input the driver has no use for
    published: int = 0
    last_ms: int = 0  # unix ms of the last bytes read
    rejected: Counter[str] = field(default_factory=Counter)
    incidents: dict[str, int] | None = None  # a radio's folding of repeated calls (drivers/incidents.py)
    last_error: str | None = None  # why the device is not connected, while it is not
    failures: int = 0  # the attempts that failed since it was last connected

    def snapshot(self) -> dict[str, object]:
        extra: dict[str, object] = {} if self.incidents is None else {"incidents": self.incidents}
        return extra | {
            "state": self.state,
            "opened": self.opened,
            "gone": self.gone,
            "silent": self.silent,
            "bytes": self.bytes,
            "events": self.events,
            "ignored": self.ignored,
            "published": self.published,
            "last_ms": self.last_ms,
            "rejected": dict(self.rejected),
            "last_error": self.last_error,
            "failures": self.failures,
        }
