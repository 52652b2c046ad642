"""What a wearable kind is: one module says its service, what to subscribe to, and what
its notifications become; the BLE manager (drivers/ble/driver.py) does the rest.

A kind sees a connected wearable as a `Link` (read, write, subscribe, count a bad value)
and the gateway as a `Host` (publish, commit a counted event and answer it, the battery,
the worker's other wearables). It holds no connection and does no scanning.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from drivers.ble import profiles as p
from drivers.nmea0183 import Reason, Rejected
from floor.kinds import Prio

if TYPE_CHECKING:
    from floor.config import WearableConfig


class Link(Protocol):
    """A connected wearable."""

    @property
    def w(self) -> WearableConfig: ...

    async def read(self, char: str) -> bytes: ...

    async def write(self, char: str, data: bytes) -> None: ...

    async def subscribe(self, char: str, tag: str) -> None:
        """Notifications of `char` arrive at the kind's `handle` as (`tag`, value), in order."""

    def has(self, char: str) -> bool:
        """Whether the device offers `char` (an optional characteristic of its profile)."""

    def reject(self, detail: str) -> None:
        """Count (and log) a value that did not decode; it is dropped, never guessed at."""

    def forged(self, detail: str) -> None:
        """An event the wearable's enrolled key does not verify: counted, reported
        (`device.state` `rejected`, reason `security`) and the connection dropped."""


def refuse(link: Link, why: Rejected) -> None:
    """A value that is not believed: forged (the session ends) or merely malformed."""
    if why.reason == Reason.FORGED:
        link.forged(why.detail)
    else:
        link.reject(why.detail)


class Host(Protocol):
    """What a kind may ask of the gateway."""

    def submit(self, kind: str, src: str, data: Mapping[str, Any], *, prio: Prio | None = None) -> object: ...

    async def counted_event(
        self,
        link: Link,
        ev: p.SosEvent,
        *,
        kind: str,
        data: dict[str, Any],
        answer: p.Feedback,
        feedback: str,
    ) -> int | None:
        """A counted event (docs/ble-profiles.md): new ones committed as `kind` with their
        counter, then answered; repeats answered again. The seq when it was new."""

    def battery(self, link: Link, raw: bytes) -> None: ...

    def worker_alarm(self, worker: str) -> None:
        """A life-safety alarm of `worker`: their other wearables react (a camera records)."""

    def last_fix(self) -> Mapping[str, Any] | None: ...


class ProfileMismatch(Exception):
    """The device has this kind's service but not what the profile requires of it."""


class Delivery(enum.StrEnum):
    """What became of an alert sent to one wearable."""

    DELIVERED = "delivered"
    UNSUPPORTED = "unsupported"  # its kind cannot show it: final, never retried
    NOT_CONNECTED = "not_connected"  # tried again when it connects
    WRITE_FAILED = "write_failed"  # tried again while it stays connected


class WearableKind:
    """One kind of wearable. Subclasses set the class attributes and override what they use."""

    name: ClassVar[str]  # the config's `kind`
    service: ClassVar[str]  # the GATT service a device of this kind must have
    label: ClassVar[str]  # its short name in `device.unknown` reports
    # Its events raise or cancel alarms: they are authenticated with the wearable's
    # enrolled key (docs/ble-profiles.md), which the config then requires.
    counted: ClassVar[bool] = False
    # The message kinds of its events that are alarms: kept by seq for a platform's
    # `sos.ack` to acknowledge, and answered by the worker's other wearables (a cancel,
    # `cancel: true` in the record, is not one).
    alarms: ClassVar[frozenset[str]] = frozenset()

    async def start(self, link: Link, host: Host) -> None:
        """Subscribe to the kind's characteristics (the link reports `connected` after this)."""

    async def handle(self, link: Link, host: Host, tag: str, raw: bytes) -> None:
        """One notification, in arrival order."""

    async def alert(self, link: Link, pattern: p.Feedback, counter: int) -> None:
        """Show a feedback pattern (an acknowledgement, a broadcast alert) on the device."""
        raise NotImplementedError

    async def show_alert(self, link: Link, level: p.AlertLevel, text: str) -> bool:
        """Show a broadcast alert as well as the device can; False if it cannot at all."""
        return False

    async def worker_alarm(self, link: Link) -> bool:
        """The wearer raised an alarm; True if this device acted on it (else it is asked
        again when it next connects, within ALARM_REACTION_S)."""
        return True

    reacts_to_alarm: ClassVar[bool] = False

    def connected(self, link: Link, host: Host, now: float) -> None:
        """The link is up and subscribed."""

    def tick(self, host: Host, now: float, workers: Mapping[str, str]) -> None:
        """Once a second, connected or not (`workers`: device id -> worker, for this kind)."""
