"""Second bearers for life-safety when the MQTT uplink is down (edge/bearers/fallback.py).

A bearer is one module with a class that has this shape; SMS through a cellular
modem is the first (edge/bearers/sms.py). A BeiDou short-message terminal would be the
next: its own driver (drivers/) and a module here whose `send` takes the same compact
signed bytes (edge/base/compact.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from edge.base.errors import Refusal


class BearerRefused(Refusal):
    """The bearer could not take the message now (no SIM, no network, refused...)."""


class Bearer(Protocol):
    name: str

    def ready(self) -> bool:
        """Able to send now (registered, with a SIM...)."""

    def cost(self, data: bytes) -> int:
        """What sending `data` costs, in the units the hourly cap counts (SMS parts)."""

    async def send(self, data: bytes) -> int:
        """Send one compact signed message to every destination; the units it cost.
        Raises BearerRefused when it could not."""

    async def run(self) -> None:
        """Keep the device open and its state fresh (supervised)."""

    def snapshot(self) -> dict[str, Any]: ...
