"""Radio reports folded into incidents, so that no one source can flood the alarm lane.

An AIS-SART, a man-overboard beacon or a ship's DSC distress is one incident, however
many times it is heard: its first report goes up at once; repeats go up when its state
or position changes meaningfully (no more than once per `MIN_GAP_MS`) or, while it keeps
transmitting, once per `repeat_ms`, each carrying `folded`, the count of reports folded
into it since the one before. Each source (a receiver) also has a budget of new
incidents and of repeats: a source inventing a new MMSI per report gets its first few
incidents up at once and the rest at a bounded rate, oldest first, never lost while the
table has room. Memory is bounded: the table holds `max_incidents`, least recently heard
evicted first. Sans-IO: time comes in as `now` (boot-time ms).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from drivers.gnss.report import distance_m
from floor.ratelimit import TokenBucket

log = logging.getLogger(__name__)

MIN_GAP_MS = 5_000  # no incident goes up more often than this, whatever it reports
NEW_BURST = 8  # new incidents a source may raise at once
NEW_EVERY_MS = 15_000  # and one more per this, after the burst
REPEAT_BURST = 8  # repeats (changes, reminders) a source may send at once
REPEAT_EVERY_MS = 2_000  # and one more per this
MAX_INCIDENTS = 1024

Output = tuple[str, dict[str, Any]]  # (kind, record data)


@dataclass(slots=True)
class Incident:
    src: str
    kind: str
    rec: dict[str, Any]  # the latest report's record
    state: Hashable
    heard: int = 0  # reports not yet published (the latest one included)
    pub_tb: int | None = None  # None: not up yet
    pub_state: Hashable = None
    pub_at: tuple[float, float] | None = None


def _where(rec: dict[str, Any]) -> tuple[float, float] | None:
    lat, lon = rec.get("lat"), rec.get("lon")
    return (lat, lon) if isinstance(lat, float | int) and isinstance(lon, float | int) else None


class IncidentShaper:
    """Decides which reports of an incident go up; see the module docstring."""

    def __init__(self, *, repeat_s: float, move_m: float, max_incidents: int = MAX_INCIDENTS) -> None:
        self._repeat = int(repeat_s * 1000)
        self._move = move_m
        self._max = max_incidents
        self._table: OrderedDict[Hashable, Incident] = OrderedDict()
        self._new: dict[str, TokenBucket] = {}
        self._again: dict[str, TokenBucket] = {}
        self.folded = 0  # reports that went up only as a count
        self.deferred = 0  # new incidents held back by their source's budget
        self.evicted = 0  # incidents dropped from a full table before they went up

    def snapshot(self) -> dict[str, int]:
        return {
            "incidents": len(self._table),
            "folded": self.folded,
            "deferred": self.deferred,
            "evicted": self.evicted,
        }

    def offer(
        self, key: Hashable, src: str, kind: str, rec: dict[str, Any], *, state: Hashable, now: int
    ) -> list[Output]:
        """One report of incident `key` from source `src`: what goes up now."""
        inc = self._table.get(key)
        if inc is None:
            inc = self._table[key] = Incident(src, kind, rec, state)
            self._evict()
        else:
            self._table.move_to_end(key)
            inc.src, inc.kind, inc.rec, inc.state = src, kind, rec, state
        inc.heard += 1
        out = self._consider(inc, now)
        if not out and inc.pub_tb is None and inc.heard == 1:
            self.deferred += 1
        return out

    def due(self, src: str, now: int) -> list[Output]:
        """What of source `src` held back by a gap or a budget may go up now (oldest first)."""
        out: list[Output] = []
        for inc in list(self._table.values()):
            if inc.src == src and inc.heard:
                out += self._consider(inc, now)
        return out

    def pending(self, src: str) -> bool:
        """Whether `src` has reports held back (its driver should call `due` soon)."""
        return any(inc.src == src and inc.heard for inc in self._table.values())

    def _consider(self, inc: Incident, now: int) -> list[Output]:
        if inc.pub_tb is None:
            if not self._bucket(self._new, inc.src, NEW_BURST, NEW_EVERY_MS, now):
                return []
            return [self._publish(inc, now)]
        gap = now - inc.pub_tb
        if gap < MIN_GAP_MS:
            return []
        changed = inc.state != inc.pub_state or self._moved(inc)
        if not changed and gap < self._repeat:
            return []
        if not self._bucket(self._again, inc.src, REPEAT_BURST, REPEAT_EVERY_MS, now):
            return []
        return [self._publish(inc, now)]

    def _moved(self, inc: Incident) -> bool:
        here, then = _where(inc.rec), inc.pub_at
        if here is None or then is None:
            return here is not None and then is None
        return distance_m(then[0], then[1], here[0], here[1]) >= self._move

    @staticmethod
    def _bucket(buckets: dict[str, TokenBucket], src: str, burst: int, every: int, now: int) -> bool:
        b = buckets.get(src)
        if b is None:
            b = buckets[src] = TokenBucket(burst, every, now)
        return b.take(now)

    def _publish(self, inc: Incident, now: int) -> Output:
        rec = dict(inc.rec)
        if inc.heard > 1:
            rec["folded"] = inc.heard - 1
            self.folded += inc.heard - 1
        inc.heard = 0
        inc.pub_tb, inc.pub_state, inc.pub_at = now, inc.state, _where(inc.rec)
        return inc.kind, rec

    def _evict(self) -> None:
        while len(self._table) > self._max:
            _key, old = self._table.popitem(last=False)
            if old.pub_tb is None:
                self.evicted += 1
                if self.evicted == 1 or self.evicted % 1000 == 0:
                    log.error(
                        "incidents: table full (%d); %d never-reported incidents dropped, the "
                        "oldest first (a source inventing identities?)",
                        self._max,
                        self.evicted,
                    )
