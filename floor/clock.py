"""Gateway time: `tb` (ms since boot, always right) and `tu` (unix ms, as good as `tq`).

A Pi has no RTC, so at boot the wall clock is whatever fake-hwclock restored. `tu`
is only as trustworthy as its quality: `gnss` after a plausible GNSS lock, `ntp`
when the kernel says the clock is synchronised, `persisted` when the wall clock
is merely plausible, `none` otherwise (and then `tu` is null).
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from dataclasses import dataclass
from pathlib import Path

# GPS week rollover sends old receivers back 1024 weeks: refuse dates before this
# floor or more than a year past the best clock we know (docs/envelope-and-topics.md, time).
GNSS_DATE_FLOOR_MS = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
YEAR_MS = 366 * 86_400_000
# How far a GNSS time may stray from an NTP-synchronised clock and still be taken: an
# NMEA time is stamped when its sentence arrives, hundreds of ms after the second began.
GNSS_NTP_BOUND_MS = 2_000


class TimeQuality(enum.StrEnum):
    """How far `tu` may be trusted (the envelope's `tq`, docs/envelope-and-topics.md)."""

    GNSS = "gnss"  # a plausible GNSS lock
    NTP = "ntp"  # the system's NTP client says it synchronised the clock
    RTC = "rtc"
    PERSISTED = "persisted"  # merely plausible: whatever fake-hwclock restored
    NONE = "none"  # not even that: `tu` is null


TRUSTED = frozenset({TimeQuality.GNSS, TimeQuality.NTP, TimeQuality.RTC})


def boottime_ms() -> int:
    """Milliseconds since boot, counting suspend (CLOCK_BOOTTIME)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This boot's random id (a boot-time reading means nothing across boots)."""
    try:
        return BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return ""


# systemd-timesyncd (Raspberry Pi OS's and Debian's default) touches this file after
# each successful synchronisation (systemd-timesyncd.service(8)). Asking the kernel
# instead (adjtimex, made as clock_adjtime) is a call the unit's system call filter
# and ProtectClock= refuse: the filter would kill the gateway for it.
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def kernel_clock_synced(flag: Path = TIMESYNC_FLAG) -> bool:
    """True when the system's NTP client says it has synchronised the clock."""
    return flag.exists()


@dataclass(frozen=True, slots=True)
class Stamp:
    """One instant on both clocks."""

    tb: int
    tu: int | None
    tq: str  # a TimeQuality's value: plain text, as CBOR encodes it fastest (it is in every message)


class Clock:
    """Maps boot time to unix time and knows how much to trust the mapping."""

    def __init__(
        self, *, synced: bool | None = None, wall_ms: int | None = None, sync_flag: Path = TIMESYNC_FLAG
    ) -> None:
        self._offset: int | None = None  # tu = tb + offset
        self._quality = TimeQuality.NONE
        self._synced_given = synced  # tests and benchmarks say; a gateway asks the system
        self._sync_flag = sync_flag
        self.gnss_disagreements = 0  # GNSS times refused for straying from an NTP-synced clock
        self.gnss_disagreement_ms = 0  # the last one's difference
        wall = wall_ms if wall_ms is not None else time.time_ns() // 1_000_000
        if self._system_synced():
            self._set(wall, boottime_ms(), TimeQuality.NTP)
        elif wall >= GNSS_DATE_FLOOR_MS:
            self._set(wall, boottime_ms(), TimeQuality.PERSISTED)

    def _system_synced(self) -> bool:
        return self._synced_given if self._synced_given is not None else kernel_clock_synced(self._sync_flag)

    def refresh(self, *, synced: bool = False) -> bool:
        """Ask the system again (a Pi without an RTC syncs minutes after boot), or take
        `synced` from whoever knows (timedated, for chrony and ntpd); True when that made
        the clock trusted just now."""
        if self._quality in (TimeQuality.NONE, TimeQuality.PERSISTED) and (synced or self._system_synced()):
            self._set(time.time_ns() // 1_000_000, boottime_ms(), TimeQuality.NTP)
            return True
        return False

    def _set(self, unix_ms: int, tb: int, quality: TimeQuality) -> None:
        self._offset = unix_ms - tb
        self._quality = quality

    @property
    def quality(self) -> TimeQuality:
        return self._quality

    @property
    def trusted(self) -> bool:
        """Good enough to expire commands and manifests by."""
        return self._quality in TRUSTED

    def now(self) -> Stamp:
        tb = boottime_ms()
        return self.stamp(tb)

    def stamp(self, tb: int) -> Stamp:
        return Stamp(tb, None if self._offset is None else tb + self._offset, self._quality.value)

    def unix_ms(self) -> int | None:
        return self.now().tu

    def plausible_gnss(self, utc_ms: int) -> bool:
        """Reject GPS-week-rollover dates: before 2024 or a year past what we know."""
        if utc_ms < GNSS_DATE_FLOOR_MS:
            return False
        known = max(GNSS_DATE_FLOOR_MS, time.time_ns() // 1_000_000)
        return utc_ms <= known + YEAR_MS

    def observe_gnss(self, utc_ms: int, tb: int) -> bool:
        """Take a GNSS time observed at boot time `tb`; True if it set the clock.

        GNSS time is not authenticated: while the system says NTP synchronised the
        clock, a GNSS time further than GNSS_NTP_BOUND_MS from it is refused and
        counted (a spoofer moving the gateway's clock could expire every command, or
        make an expired one valid), never taken."""
        if not self.plausible_gnss(utc_ms):
            return False
        if self._quality == TimeQuality.NTP or (self._quality == TimeQuality.GNSS and self._system_synced()):
            ntp_at_tb = time.time_ns() // 1_000_000 - (boottime_ms() - tb)
            if abs(utc_ms - ntp_at_tb) > GNSS_NTP_BOUND_MS:
                self.gnss_disagreements += 1
                self.gnss_disagreement_ms = utc_ms - ntp_at_tb
                return False
        self._set(utc_ms, tb, TimeQuality.GNSS)
        return True
