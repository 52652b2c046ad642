"""A simulated systemd-timedated on a private system bus: org.freedesktop.timedate1 with
the `NTPSynchronized` property set from the command line, as the real one reads it from
the kernel when chrony or ntpd has synchronised the clock. Prints READY once it owns
its name.

    python -m tests.support.timedated --synced yes|no
"""

from __future__ import annotations

import argparse
import asyncio

from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property


class TimeDate(ServiceInterface):
    def __init__(self, synced: bool) -> None:
        super().__init__("org.freedesktop.timedate1")
        self._synced = synced

    @dbus_property(access=PropertyAccess.READ)
    def NTPSynchronized(self) -> b:  # type: ignore[name-defined]  # noqa: F821 (D-Bus's names)
        return self._synced

    @dbus_property(access=PropertyAccess.READ)
    def NTP(self) -> b:  # type: ignore[name-defined]  # noqa: F821
        return True


async def main(synced: bool) -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    bus.export("/org/freedesktop/timedate1", TimeDate(synced))
    await bus.request_name("org.freedesktop.timedate1")
    print("READY", flush=True)
    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--synced", choices=("yes", "no"), required=True)
    asyncio.run(main(parser.parse_args().synced == "yes"))
