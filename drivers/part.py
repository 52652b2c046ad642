"""What a part is: the descriptor a stream device kind's or a bearer's module exports as
`PART` (drivers/parts.py finds them), and what each kind of part and the gateway offer
each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from drivers.raw import RawView
from floor.config import BearerConfig, DeviceConfig, Section
from floor.errors import Problem, Refusal

if TYPE_CHECKING:
    from drivers.ais.parse import AisReport
    from drivers.ais.tracker import VesselTracker
    from drivers.base import Emit
    from drivers.gnss.parse import Fix
    from floor.clock import Clock

D = TypeVar("D", bound=DeviceConfig)
B = TypeVar("B", bound=BearerConfig)


class DeviceHost(Protocol):
    """What the gateway lends a stream device it builds."""

    @property
    def emit(self) -> Emit: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def tracker(self) -> VesselTracker:
        """The station's one view of the fleet, shared by every receiver."""

    @property
    def state_dir(self) -> Path:
        """Where a device keeps what must survive a restart (its own files)."""

    @property
    def tap(self) -> Callable[[str, bytes], None] | None:
        """Hears every byte read, as read (NMEA forwarding), or None."""

    async def room(self) -> None:
        """Returns once the outbox can take more (backpressure before the next read)."""

    def on_time(self, utc_ms: int, tb: int) -> None:
        """A GNSS time, for the gateway's clock."""

    def on_fix(self, dev: str, fix: Fix) -> None:
        """A GNSS fix (alarms carry the latest; local tools hear it)."""

    def on_ais(self, dev: str, report: AisReport) -> None:
        """A decoded AIS report, for local tools."""


class Device(Protocol):
    """A built stream device, as the gateway runs and shows it."""

    name: str  # "kind[id]": its task's and log lines' name
    dev_id: str
    raw: RawView  # its last lines as sent, while a technician looks

    async def run(self) -> None:
        """One lifetime of its link; returns only by raising (a supervisor reopens it)."""

    def snapshot(self) -> dict[str, Any]:
        """Its entry in the status: `kind`, `state`, counters, and what the part adds."""

    def pace(self, positions_s: float | None) -> None:
        """Emergency posture: positions at least this often (None: as configured)."""


class BearerRefused(Refusal):
    """A bearer could not take a message now (no SIM, no network, refused...)."""


class Bearer(Protocol):
    """A way other than the MQTT uplink for life-safety messages to leave the gateway."""

    name: str

    def ready(self) -> bool:
        """Able to send now (registered, with a SIM...)."""

    def cost(self, data: bytes, text: str | None) -> int:
        """What sending costs, in the units its hourly budget counts (SMS parts)."""

    async def send(self, key: str, data: bytes, text: str | None) -> int:
        """Send one message (`key` names it, the same on every try): the compact signed
        `data` to the platform's destinations, `text` (the alarm in words) to people's;
        the units it cost. A try again with the same key never sends twice what a
        destination took. Raises BearerRefused when the platform's copy could not go."""

    async def tell(self, key: str, text: str) -> int:
        """`text` to people's destinations only (an escalation); the units it cost (0:
        this bearer has no people to tell)."""

    async def run(self) -> None:
        """Keep the device open and its state fresh (supervised)."""

    def snapshot(self) -> dict[str, Any]:
        """Its entry in the status: `state` at least, `cause` when it cannot send."""


class BearerHost(Protocol):
    """What the gateway lends a bearer it builds."""

    @property
    def state_dir(self) -> Path:
        """Where the bearer keeps what must survive a restart (its own files)."""

    def signature(self, data: bytes) -> bytes:
        """The gateway key's bare Ed25519 signature over `data` (64 bytes), for a form too
        small for the compact signed one (floor/compact.py, the short form)."""

    def device(self, dev_id: str) -> Device | None:
        """A stream device the gateway built (a bearer that sends through a terminal
        which is also a device: a BeiDou terminal), or None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamPart(Generic[D]):
    """A kind of stream device (serial, TCP or UDP bytes to a sans-IO parser)."""

    name: str  # the config's `kind`
    config: type[D]
    parse: Callable[[Section, str], D]
    build: Callable[[D, DeviceHost], Device]
    # the stations sheet's columns a device of this kind takes (`gridedge provision --from`)
    columns: tuple[str, ...] = ("port", "url", "baudrate", "allow")
    gpsd: bool = False  # listed by the gpsd-compatible feed (its reports are shared)
    backoff: tuple[float, float] = (0.2, 10.0)  # reopening: first and longest wait, s


@dataclass(frozen=True, slots=True, kw_only=True)
class BearerPart(Generic[B]):
    """A bearer for life-safety messages when the uplink is down; its section names it."""

    name: str  # its config section, `[sms]`
    config: type[B]
    parse: Callable[[Section], B]
    build: Callable[[B, BearerHost], Bearer]
    backoff: tuple[float, float] = (1.0, 60.0)
    # what `gridedge check` should warn of in its section (given the gateway's id)
    advice: Callable[[B, str], list[Problem]] = lambda _cfg, _gw: []


AnyStreamPart = StreamPart[Any]
AnyBearerPart = BearerPart[Any]
