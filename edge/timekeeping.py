"""The gateway's clock at work: GNSS times offered to it, NTP looked for at start and
again every CLOCK_CHECK_S, and one `time.anchor` per epoch once the clock is trusted, so
the platform can re-date what was stamped before.

Whether the system's NTP client has synchronised the clock: systemd-timesyncd says so by
a flag file (floor/clock.py); chrony and ntpd set the kernel's own status, which the unit
does not let the gateway read (adjtimex is outside its system call filter), so it asks
systemd-timedated (`NTPSynchronized`, which timedated reads from the kernel for
whichever client runs) with `busctl`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from drivers.gnss.parse import Fix
from floor.clock import Clock, Stamp, TimeQuality, boottime_ms

log = logging.getLogger(__name__)

CLOCK_CHECK_S = 30.0


TIMEDATED = "org.freedesktop.timedate1"
ASK_S = 5.0
BUSCTL = ("/usr/bin/busctl", "/bin/busctl")


async def timedated_synced() -> bool | None:
    """systemd-timedated's `NTPSynchronized` (the kernel's clock status, for any NTP
    client), asked with systemd's own `busctl` (a D-Bus library in the gateway would cost
    every gateway its memory for a question asked only while the clock is untrusted);
    None when there is no busctl, no system bus or no timedated to ask."""
    busctl = next((b for b in BUSCTL if os.access(b, os.X_OK)), None)
    if busctl is None:
        return None
    args = ("get-property", TIMEDATED, "/org/freedesktop/timedate1", TIMEDATED, "NTPSynchronized")
    try:
        proc = await asyncio.create_subprocess_exec(
            busctl, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), ASK_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
    except OSError as exc:
        log.debug("clock: timedated not asked: %s", exc)
        return None
    answer = out.decode("ascii", "replace").split()  # "b true"
    if proc.returncode != 0 or len(answer) != 2 or answer[0] != "b":
        return None
    return answer[1] == "true"


class TimeKeeper:
    def __init__(self, clock: Clock, publish: Callable[[dict[str, Any], Stamp], None]) -> None:
        self.clock = clock
        self._publish = publish  # a time.anchor record, stamped with its own instant
        self._anchored = False
        self.boot: str | None = None  # the boot the epoch runs in (set when the epoch starts)
        self.last_fix: Fix | None = None  # any receiver's latest

    def start(self, boot: str) -> None:
        """The epoch has started: anchor it now if the clock is already trusted."""
        self.boot = boot
        if self.clock.quality in (TimeQuality.NTP, TimeQuality.GNSS):
            self.anchor()

    def on_time(self, utc_ms: int, tb: int) -> None:
        refused = self.clock.gnss_disagreements
        if self.clock.observe_gnss(utc_ms, tb) and not self._anchored:
            self.anchor()
        elif self.clock.gnss_disagreements > refused and refused % 600 == 0:
            log.warning(
                "clock: GNSS time %+d ms from the NTP-synchronised clock: not taken (%d so far)",
                self.clock.gnss_disagreement_ms,
                refused + 1,
            )

    def on_fix(self, fix: Fix) -> None:
        self.last_fix = fix

    def fix_record(self) -> dict[str, Any] | None:
        """The latest GNSS fix for an alarm, with its age (a stale fix is still worth sending)."""
        fix = self.last_fix
        if fix is None:
            return None
        return {**fix.record(), "age_ms": max(0, boottime_ms() - fix.tb)}

    async def watch(self) -> None:
        """Ask the system about NTP now and every CLOCK_CHECK_S: a gateway that booted
        before its NTP client synchronised trusts its clock as soon as it does."""
        while True:
            if self.clock.quality in (TimeQuality.NONE, TimeQuality.PERSISTED):
                synced = await timedated_synced()
                if self.clock.refresh(synced=synced is True):
                    log.info("clock: NTP synchronised the system clock; trusted now")
                    self.anchor()
            await asyncio.sleep(CLOCK_CHECK_S)

    def anchor(self) -> None:
        """time.anchor: one instant on both clocks, so the platform can re-date earlier records."""
        if self.boot is None:
            return
        st = self.clock.now()
        self._anchored = True
        self._publish({"tb": st.tb, "tu": st.tu, "tq": st.tq, "boot": self.boot}, st)

    def snapshot(self) -> dict[str, Any]:
        return {
            "tq": self.clock.quality,
            "gnss_disagreements": self.clock.gnss_disagreements,  # GNSS times refused (NTP says otherwise)
            "gnss_disagreement_ms": self.clock.gnss_disagreement_ms,
        }
