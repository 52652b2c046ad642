"""Gateway configuration: TOML into frozen dataclasses, once, at start.

Every error names the key path and the line (`devices[2].baudrate: expected an
integer, got "fast"`); unknown keys are errors, so a typo never silently becomes a
default.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from floor.errors import N_, ONE_OF, ConfigError, Problem
from floor.kinds import LIFE_SAFETY_KINDS, Prio, prio_of

ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_PATH = Path("/etc/gridedge/gateway.toml")
T = TypeVar("T")
_REQUIRED: Any = object()


def valid_id(value: str) -> bool:
    """Ids become topic segments, so `+`, `#`, `/` and NUL can never be in one."""
    return ID_RE.fullmatch(value) is not None


# ---------------------------------------------------------------- line index


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(
    r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*="""
)


def _split_dotted(key: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', key)
    return [a or b or c for a, b, c in parts]


def line_index(text: str) -> dict[str, int]:
    """Map key paths (`devices[1].port`, `mqtt`) to 1-based line numbers."""
    index: dict[str, int] = {}
    counts: dict[str, int] = {}
    prefix = ""
    depth = 0  # bracket depth of a multi-line array or inline table
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if depth == 0 and stripped.startswith("["):
            m = _HEADER_RE.match(line)
            if m:
                name = ".".join(_split_dotted(m.group(2)))
                if m.group(1) == "[[":
                    i = counts.get(name, 0)
                    counts[name] = i + 1
                    prefix = f"{name}[{i}]"
                else:
                    prefix = name
                index.setdefault(prefix, number)
                continue
        if depth == 0:
            m = _KEY_RE.match(line)
            if m:
                key = ".".join(_split_dotted(m.group(1)))
                index.setdefault(f"{prefix}.{key}" if prefix else key, number)
        code = _unquoted(line)
        depth = max(0, depth + code.count("[") + code.count("{") - code.count("]") - code.count("}"))
    return index


def _unquoted(line: str) -> str:
    """The line without its comment and without what is inside strings (a `[` or `#` in
    a quoted value is no bracket and no comment)."""
    out: list[str] = []
    quote = ""
    for ch in line:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        else:
            out.append(ch)
    return "".join(out)


NOT_AN_ID = N_("{value} is not an id ([A-Za-z0-9._-]{{1,64}})")
OPEN_TO_OTHERS = N_("{file_path} is readable by group or others (mode {mode}); chmod 600 it")
CANNOT_READ = N_("cannot read {file_path}: {why}")


def _describe(value: Any) -> str | Problem:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return Problem(N_("a table"))
    if isinstance(value, list):
        return Problem(N_("an array"))
    return repr(value)


class Section:
    """Typed, located access to one TOML table; `done()` rejects unknown keys."""

    def __init__(self, table: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
        self._table = table
        self._path = path
        self._ctx = ctx
        self._seen: set[str] = set()

    def _key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def error(self, key: str, message: str | Problem, **values: object) -> ConfigError:
        """A ConfigError located at `key` of this table (or the table itself)."""
        path = self._key_path(key) if key else self._path
        return self._ctx.error(path, message, **values)

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        if key in self._table:
            return self._table[key]
        if default is _REQUIRED:
            raise self.error(key, N_("is required"))
        return default

    def _typed(self, key: str, default: Any, check: Callable[[Any], bool], what: str) -> Any:
        value = self._get(key, default)
        if value is default and default is not _REQUIRED:
            return value
        if not check(value):
            raise self.error(key, N_("expected {what}, got {got}"), what=Problem(what), got=_describe(value))
        return value

    def text(self, key: str, default: Any = _REQUIRED) -> Any:
        return self._typed(key, default, lambda v: isinstance(v, str), N_("a string"))

    def id(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.text(key, default)
        if isinstance(value, str) and not valid_id(value):
            raise self.error(key, NOT_AN_ID, value=_describe(value))
        return value

    def integer(
        self, key: str, default: Any = _REQUIRED, *, lo: int | None = None, hi: int | None = None
    ) -> Any:
        value = self._typed(
            key, default, lambda v: isinstance(v, int) and not isinstance(v, bool), N_("an integer")
        )
        if isinstance(value, int) and not isinstance(value, bool):
            if lo is not None and value < lo:
                raise self.error(key, N_("must be at least {lo}, got {value}"), lo=lo, value=value)
            if hi is not None and value > hi:
                raise self.error(key, N_("must be at most {hi}, got {value}"), hi=hi, value=value)
        return value

    def number(self, key: str, default: Any = _REQUIRED, *, lo: float | None = None) -> Any:
        value = self._typed(
            key,
            default,
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
            N_("a number"),
        )
        if value is not None and value is not default and lo is not None and value < lo:
            raise self.error(key, N_("must be at least {lo:g}, got {value:g}"), lo=lo, value=value)
        return None if value is None else float(value)

    def flag(self, key: str, default: Any = _REQUIRED) -> Any:
        return self._typed(key, default, lambda v: isinstance(v, bool), N_("true or false"))

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        value = self.text(key, default)
        if value not in choices and value is not default:
            raise self.error(key, ONE_OF, choices=", ".join(choices), got=_describe(value))
        return value

    def path(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.text(key, default)
        if value is None or (value is default and not isinstance(value, str)):
            return value
        p = Path(value)
        return p if p.is_absolute() else (self._ctx.base / p)

    def table(self, key: str, *, required: bool = False) -> Section:
        value = self._get(key, _REQUIRED if required else {})
        if not isinstance(value, dict):
            raise self.error(key, N_("expected a table, got {got}"), got=_describe(value))
        return Section(value, self._key_path(key), self._ctx)

    def tables(self, key: str) -> list[Section]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, N_("expected an array of tables ([[...]])"))
        return [Section(v, f"{self._key_path(key)}[{i}]", self._ctx) for i, v in enumerate(value)]

    def str_list(self, key: str, default: Any = _REQUIRED) -> tuple[str, ...]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, N_("expected an array of strings, got {got}"), got=_describe(value))
        return tuple(value)

    def raw(self, key: str) -> Any:
        """The untyped value (for tables of kind-specific shape)."""
        self._seen.add(key)
        return self._table.get(key)

    def data_keys(self) -> list[str]:
        """The keys of a table whose keys are data (`[outbox.ttl_s]` by kind)."""
        return list(self._table)

    def has(self, key: str) -> bool:
        return key in self._table

    def done(self) -> None:
        """Refuse keys nobody asked for: a typo must not become a silent default."""
        for key in self._table:
            if key not in self._seen:
                raise self.error(key, N_("unknown key"))


@dataclass(frozen=True, slots=True)
class _Ctx:
    file: str
    base: Path
    lines: dict[str, int]

    def error(self, path: str, message: str | Problem, **values: object) -> ConfigError:
        # A missing key has no line of its own: point at the table that lacks it.
        probe = path
        line = self.lines.get(probe)
        while line is None and probe:
            probe = probe[: probe.rindex("[")] if probe.endswith("]") else probe.rpartition(".")[0]
            line = self.lines.get(probe)
        return ConfigError(path, message, file=self.file, line=line, **values)


# ---------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    id: str
    key: Path
    state_dir: Path
    status_socket: Path  # `gridedge status` asks here; default state_dir/gridedge.sock
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "gridedge/v1"
    keepalive_s: int = 30
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    inflight: int = 64
    backlog_queue_ms: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxConfig:
    max_bytes: int = 256 * 1024 * 1024
    batch_ms: int = 250
    commit_ms: int = 1000  # a message unacknowledged this long is written (write-behind; alarms first)
    ttl_s: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialPort:
    """Where a serial device is and how fast it talks."""

    port: str
    baudrate: int = 9600
    silence_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NetSource:
    """A TCP server to connect to or a UDP port to listen on."""

    scheme: str  # "tcp" or "udp"
    host: str
    port: int
    silence_s: float = 60.0
    # udp: the senders taken (addresses or networks); empty takes any sender
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def wildcard(self) -> bool:
        """A UDP listener on every interface."""
        return self.scheme == "udp" and self.host in ("0.0.0.0", "::", "[::]", "*")

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


Source = SerialPort | NetSource


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """What every stream device's config has (a `[[devices]]` entry of a part's `kind`);
    each part (drivers/<part>/part.py) extends it with its own keys."""

    id: str
    kind: str
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class BearerConfig:
    """What every bearer's section has; each bearer part extends it. A bearer carries the
    life-safety `kinds` the broker has not acknowledged `after_s` after their commit
    (None: `[alarms] failover_s`), within its hourly budget (docs/operations.md)."""

    name: ClassVar[str]  # its section, `[sms]`: the part's name
    after_s: float | None = None
    kinds: tuple[str, ...] = LIFE_SAFETY_KINDS
    test_every_s: float = 0.0  # a signed test message to the platform this often; 0: never

    @property
    def enabled(self) -> bool:
        """Set up to send (a section may be present but switched off)."""
        return True

    @property
    def per_hour(self) -> int:
        """What it may spend in any hour, in the units its `cost` counts."""
        return 0

    @property
    def uses_device(self) -> str | None:
        """The id of the stream device (of the bearer's own kind) it sends through, if any."""
        return None


DeviceParser = Callable[["Section", str], DeviceConfig]
BearerParser = Callable[["Section"], BearerConfig]


@dataclass(frozen=True, slots=True, kw_only=True)
class PartCatalog:
    """What the config knows of the parts above the floor: each stream device kind's and
    bearer's section parser, and the wearable kinds (True: its events need a key). The
    registry that finds the parts (drivers/parts.py) hands it to `load`, so the floor names
    no part."""

    devices: Mapping[str, DeviceParser]
    bearers: Mapping[str, BearerParser]
    wearables: Mapping[str, bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class AisConfig:
    """Station-wide AIS shaping (all receivers share one view of the fleet)."""

    min_interval_s: float = 10.0
    min_course_change_deg: float = 10.0
    dedup_window_s: float = 30.0
    max_vessels: int = 20_000
    outside_min_interval_s: float = 5.0
    beacon_repeat_s: float = 60.0  # a beacon still transmitting goes up again this often
    beacon_move_m: float = 50.0  # or sooner when it has moved this far (or changed state)


@dataclass(frozen=True, slots=True, kw_only=True)
class Geofence:
    id: str
    polygon: tuple[tuple[float, float], ...]  # (lat, lon) vertices
    fleet: tuple[int, ...] = ()  # the home fleet's MMSIs: a recall lists those not inside


MAX_FLEET = 4096  # MMSIs in one geofence's home fleet


def fleet_problem(raw: Any) -> Problem | None:
    """Why `raw` is not a home fleet (a list of distinct 9-digit MMSIs), or None."""
    if not isinstance(raw, list) or len(raw) > MAX_FLEET:
        return Problem(N_("expected an array of at most {n} MMSIs"), {"n": MAX_FLEET})
    bad = [
        m for m in raw if isinstance(m, bool) or not isinstance(m, int) or not 100_000_000 <= m <= 999_999_999
    ]
    if bad:
        return Problem(N_("not a 9-digit MMSI: {value}"), {"value": repr(bad[0])})
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustConfig:
    """Trust anchors: public keys, never private ones."""

    command_key: Path | None = None  # the platform's command-signing key (PEM SubjectPublicKeyInfo)
    firmware_key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BleConfig:
    """The BLE radio for the wearables (drivers/ble)."""

    backend: str = "bleak"  # or "sim": the simulated radio (drivers/ble/sim); a closed set
    options: tuple[tuple[str, str], ...] = ()  # passed to the backend factory
    connect_timeout_s: float = 15.0
    probe_s: float = 10.0  # a connected wearable is read this often; one that does not answer...
    probe_timeout_s: float = 5.0  # ...within this is disconnected and reconnected
    battery_report_s: float = 600.0  # device.battery at least this often (and on every change)
    reconnect_max_s: float = 30.0
    unknown_report_s: float = 60.0  # device.unknown at most once per stranger per this


@dataclass(frozen=True, slots=True, kw_only=True)
class WearableConfig:
    """A wearable the gateway may connect to and believe (`[[devices]]` kind sos_button/body_camera)."""

    id: str
    kind: str
    worker: str
    address: str | None = None
    irk: str | None = None
    fw_class: str | None = None  # firmware device class (manifests name it), e.g. "sos-button-v2"
    smp_port: str | None = None  # a serial port with the device's MCUmgr SMP console (else BLE)
    key: str | None = field(default=None, repr=False)  # 32 hex digits: its events are authenticated with it
    insecure: bool = False  # a wearable that cannot authenticate its events, believed anyway

    @property
    def event_key(self) -> bytes | None:
        return None if self.key is None else bytes.fromhex(self.key)


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareConfig:
    """Firmware updates for the wearables (firmware_bridge)."""

    max_bytes: int = 64 * 1024 * 1024  # disk the image store may use
    floor_mirror: Path | None = None  # a second copy of the anti-rollback floor, outside state_dir
    smp_timeout_s: float = 5.0
    reboot_wait_s: float = 60.0
    download_timeout_s: float = 3600.0  # a download with no chunk for this long fails (timeout)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    """The technician's status page, `/metrics` and the feeds for local tools (edge/web)."""

    listen: str = ""  # host:port of the status page and /metrics; empty: no page
    token_file: Path | None = None  # the page's access token (gridedge provision writes one)
    gpsd: str = ""  # host:port of a gpsd-compatible JSON feed (TPV, SKY, AIS); empty: none
    nmea_udp: tuple[str, ...] = ()  # host:port each: the sentences as heard, forwarded by UDP
    nmea_ais_only: bool = False  # forward only the AIS sentences (!AIVDM/!AIVDO)

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)

    @property
    def open(self) -> bool:
        """Anyone may look: a loopback-only listener without a token file."""
        return self.token_file is None and is_loopback(self.host_port[0])


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostureConfig:
    """What changes in emergency posture (`[posture]`; the signed `posture.set` switches)."""

    positions_s: float = 5.0  # a worker's GNSS position goes up this often at least
    fleet_interval_s: float = 10.0  # a home fleet vessel's AIS position, likewise (others keep [ais])
    recall_every_s: float = 60.0  # the recall list (vessels.outside) this often
    status_every_s: float = 60.0  # the status (diag.snapshot) this often
    budget_factor: float = 3.0  # each bearer's hourly budget, multiplied
    max_hours: float = 168.0  # the longest a posture.set may hold before its expiry


ESCALATION_STEPS = ("bearers", "duty", "wearables")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmsConfig:
    """What happens to an alarm the platform does not hear or does not answer (`[alarms]`)."""

    failover_s: float = 5.0  # no PUBACK this long after its commit: it goes by the other bearers too
    reserve_share: float = 0.5  # of each bearer's hourly budget, kept for new alarms (repeats never use it)
    repeat_every_s: float = 600.0  # a repeat of one incident (a beacon still sending) goes this often at most
    ack_within_s: float = 120.0  # a wearable's alarm not acknowledged (sos.ack) this long is escalated...
    escalate_every_s: float = 120.0  # ...one step this often
    escalation: tuple[str, ...] = ESCALATION_STEPS  # in this order; empty: none
    language: str = "zh_CN"  # of alarms in words (a duty number's SMS): zh_CN or en
    timezone: str = ""  # an IANA zone for their times (Asia/Shanghai); empty: the system's
    map_link: str = "https://uri.amap.com/marker?position={lon},{lat}"  # empty: no link
    names: Mapping[str, str] = field(default_factory=dict)  # worker id -> name, for alarms in words


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    file: Path  # the technician's file (what `-c` names); relative paths resolve against its folder
    gateway: GatewayConfig
    mqtt: MqttConfig
    outbox: OutboxConfig
    devices: tuple[DeviceConfig, ...]
    parts: PartCatalog  # what it was parsed with (a config.apply is parsed with the same)
    ais: AisConfig = field(default_factory=AisConfig)
    geofences: tuple[Geofence, ...] = ()
    trust: TrustConfig = field(default_factory=TrustConfig)
    ble: BleConfig = field(default_factory=BleConfig)
    wearables: tuple[WearableConfig, ...] = ()
    firmware: FirmwareConfig = field(default_factory=FirmwareConfig)
    bearers: tuple[BearerConfig, ...] = ()  # in the order of their sections: tried in that order
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    posture: PostureConfig = field(default_factory=PostureConfig)
    web: WebConfig = field(default_factory=WebConfig)
    applied: Path | None = None  # the platform's config.apply file in effect instead of `file`

    def topic(self, *parts: str) -> str:
        return "/".join((self.mqtt.topic_prefix, self.gateway.id, *parts))

    def bearer(self, name: str) -> BearerConfig | None:
        return next((b for b in self.bearers if b.name == name), None)


BAUD_RATES = (4800, 9600, 19200, 38400, 57600, 115200)


def baud(sec: Section, default: int = 9600) -> int:
    value: int = sec.integer("baudrate", default)
    if value not in BAUD_RATES:
        raise sec.error("baudrate", ONE_OF, choices=", ".join(map(str, BAUD_RATES)), got=value)
    return value


def split_url(url: str) -> tuple[str, str, int]:
    """`tcp://host:port` or `udp://host:port` to (scheme, host, port); ValueError if not."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "udp") or not parts.hostname or port is None:
        raise ValueError(f"expected tcp://host:port or udp://host:port, got {url!r}")
    return parts.scheme, parts.hostname, port


def source(sec: Section, *, default_baud: int, default_silence: float) -> Source:
    """`port` (+ `baudrate`) for serial, or `url` = tcp://host:port / udp://host:port."""
    if not sec.has("url") and not sec.has("port"):
        raise sec.error("port", N_("is required (a serial port, or url = tcp://host:port / udp://host:port)"))
    if sec.has("url") and sec.has("port"):
        raise sec.error("port", N_("set either port (serial) or url (tcp/udp), not both"))
    if sec.has("port"):
        return SerialPort(
            port=sec.text("port"),
            baudrate=baud(sec, default_baud),
            silence_s=sec.number("silence_s", default_silence, lo=0.1),
        )
    url = sec.text("url")
    try:
        scheme, host, port = split_url(url)
    except ValueError:
        raise sec.error(
            "url", N_("expected tcp://host:port or udp://host:port, got {got}"), got=repr(url)
        ) from None
    return NetSource(
        scheme=scheme,
        host=host,
        port=port,
        silence_s=sec.number("silence_s", default_silence, lo=0.1),
        allow=_allow(sec, scheme),
    )


def _allow(sec: Section, scheme: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`allow = ["192.168.4.20", "10.1.0.0/24"]`: who a UDP listener takes datagrams from."""
    if not sec.has("allow"):
        return ()
    if scheme != "udp":
        raise sec.error("allow", N_("applies to udp:// listeners only (tcp:// is a server we connect to)"))
    nets = []
    for entry in sec.str_list("allow"):
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise sec.error(
                "allow",
                N_("{value} is not an IP address or network (a.b.c.d, a.b.c.0/24)"),
                value=repr(entry),
            ) from None
    if not nets:
        raise sec.error("allow", N_("is empty: it would refuse every sender (leave it out to take any)"))
    return tuple(nets)


def _geofence(sec: Section) -> Geofence:
    gid = sec.id("id")
    raw = sec.raw("polygon")
    pts: list[tuple[float, float]] = []
    if not isinstance(raw, list) or len(raw) < 3:
        raise sec.error("polygon", N_("expected at least 3 [lat, lon] points"))
    for i, pt in enumerate(raw):
        ok = (
            isinstance(pt, list)
            and len(pt) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pt)
            and -90 <= pt[0] <= 90
            and -180 <= pt[1] <= 180
        )
        if not ok:
            raise sec.error(
                "polygon", N_("point {i} is not a [lat, lon] pair in range: {value}"), i=i, value=repr(pt)
            )
        pts.append((float(pt[0]), float(pt[1])))
    fleet = sec.raw("fleet") if sec.has("fleet") else []
    if (problem := fleet_problem(fleet)) is not None:
        raise sec.error("fleet", problem)
    sec.done()
    return Geofence(id=gid, polygon=tuple(pts), fleet=tuple(sorted(set(fleet))))


def _private_file_ok(sec: Section, key: str, path: Path) -> None:
    try:
        st = path.stat()
    except OSError as exc:
        raise sec.error(key, CANNOT_READ, file_path=path, why=exc.strerror) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise sec.error(
            key,
            OPEN_TO_OTHERS,
            file_path=path,
            mode=stat.filemode(st.st_mode),
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(
    text: str,
    *,
    parts: PartCatalog,
    file: str = "<config>",
    base: Path | None = None,
    check_files: bool = True,
) -> Config:
    """Parse and validate config text; raise ConfigError naming key and line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            "", N_("not valid TOML: {why}"), file=file, line=int(where.group(1)) if where else None, why=exc
        ) from None
    ctx = _Ctx(file=file, base=base or Path.cwd(), lines=line_index(text))
    root = Section(data, "", ctx)
    gateway = _gateway(root.table("gateway", required=True), check_files)
    mqtt = _mqtt(root.table("mqtt"))
    outbox = _outbox(root.table("outbox"))
    devices, wearables = _devices(root, parts)
    ble = _ble(root.table("ble"))
    firmware = _firmware(root.table("firmware"))
    ais = _ais_station(root.table("ais"))
    trust = _trust(root.table("trust"), check_files)
    # a bearer's section, where present; tomllib keeps the file's order, which is the order tried
    bearers = [parts.bearers[name](root.table(name)) for name in data if name in parts.bearers]
    for b in bearers:
        dev = b.uses_device
        if dev is not None and not any(d.id == dev and d.kind == b.name for d in devices):
            raise root.error(
                f"{b.name}.device",
                N_("{id} is not a [[devices]] entry of kind {kind}"),
                id=repr(dev),
                kind=b.name,
            )
    web = _web(root.table("web"), check_files)
    alarms = _alarms(root.table("alarms"))
    posture = _posture(root.table("posture"))
    geofences = [_geofence(s) for s in root.tables("geofences")]
    if len({g.id for g in geofences}) != len(geofences):
        raise root.error("geofences", N_("geofence ids must be unique"))
    root.done()
    return Config(
        file=Path(file),
        gateway=gateway,
        mqtt=mqtt,
        outbox=outbox,
        devices=tuple(devices),
        parts=parts,
        ais=ais,
        geofences=tuple(geofences),
        trust=trust,
        ble=ble,
        wearables=tuple(wearables),
        firmware=firmware,
        bearers=tuple(bearers),
        alarms=alarms,
        posture=posture,
        web=web,
    )


# Each default is the dataclass's (one source): the sections read them from these.
_MQTT, _OUTBOX, _BLE, _FIRMWARE, _AIS, _WEB, _ALARMS = (
    MqttConfig(),
    OutboxConfig(),
    BleConfig(),
    FirmwareConfig(),
    AisConfig(),
    WebConfig(),
    AlarmsConfig(),
)
_POSTURE = PostureConfig()


def _gateway(g: Section, check_files: bool) -> GatewayConfig:
    gateway = GatewayConfig(
        id=g.id("id"),
        key=g.path("key"),
        state_dir=(state_dir := g.path("state_dir")),
        status_socket=g.path("status_socket", None) or state_dir / "gridedge.sock",
        groups=tuple(_ids(g, "groups")),
    )
    if check_files:
        _private_file_ok(g, "key", gateway.key)
    g.done()
    return gateway


def _mqtt(m: Section) -> MqttConfig:
    d = _MQTT
    mqtt = MqttConfig(
        host=m.text("host", d.host),
        port=m.integer("port", d.port, lo=1, hi=65535),
        topic_prefix=m.text("topic_prefix", d.topic_prefix),
        keepalive_s=m.integer("keepalive_s", d.keepalive_s, lo=5, hi=3600),
        tls_ca=m.path("tls_ca", d.tls_ca),
        tls_cert=m.path("tls_cert", d.tls_cert),
        tls_key=m.path("tls_key", d.tls_key),
        insecure=m.flag("insecure", d.insecure),
        inflight=m.integer("inflight", d.inflight, lo=1, hi=65535),
        backlog_queue_ms=m.number("backlog_queue_ms", d.backlog_queue_ms, lo=1.0),
        reconnect_min_s=m.number("reconnect_min_s", d.reconnect_min_s, lo=0.01),
        reconnect_max_s=m.number("reconnect_max_s", d.reconnect_max_s, lo=0.1),
    )
    prefix = mqtt.topic_prefix
    if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
        raise m.error("topic_prefix", N_("{value} is not a usable topic prefix"), value=_describe(prefix))
    if (mqtt.tls_cert is None) != (mqtt.tls_key is None):
        raise m.error("tls_cert", N_("tls_cert and tls_key go together"))
    if mqtt.tls_cert is not None and mqtt.tls_ca is None:
        raise m.error("tls_ca", N_("is required when tls_cert is set"))
    if not mqtt.tls and not mqtt.insecure and not is_loopback(mqtt.host):
        raise m.error(
            "host",
            N_("plaintext MQTT to non-loopback host {host}: set tls_ca, or insecure = true"),
            host=repr(mqtt.host),
        )
    # The TLS files are not checked here: a gateway whose uplink cannot start still
    # stores and works locally (tools/checks.py tells, `gridedge check` fails on them).
    m.done()
    return mqtt


def _outbox(o: Section) -> OutboxConfig:
    ttl = o.table("ttl_s")
    ttl_map = {k: ttl.integer(k, lo=1) for k in ttl.data_keys()}
    for k in ttl_map:
        if prio_of(k) == Prio.LIFE_SAFETY:
            raise ttl.error(k, N_("life-safety messages never expire"))
    ttl.done()
    outbox = OutboxConfig(
        max_bytes=o.integer("max_bytes", _OUTBOX.max_bytes, lo=1024 * 1024),
        batch_ms=o.integer("batch_ms", _OUTBOX.batch_ms, lo=0, hi=10_000),
        commit_ms=o.integer("commit_ms", _OUTBOX.commit_ms, lo=0, hi=10_000),
        ttl_s=ttl_map,
    )
    o.done()
    return outbox


def _devices(root: Section, parts: PartCatalog) -> tuple[list[DeviceConfig], list[WearableConfig]]:
    devices: list[DeviceConfig] = []
    wearables: list[WearableConfig] = []
    seen: dict[str, str] = {}
    for sec in root.tables("devices"):
        dev_id = sec.id("id")
        kind = sec.text("kind")
        build = parts.devices.get(kind)
        if build is None and kind not in parts.wearables:
            kinds = ", ".join([*parts.devices, *parts.wearables])
            raise sec.error("kind", ONE_OF, choices=kinds, got=_describe(kind))
        if dev_id in seen or dev_id == "gw":
            raise sec.error("id", N_("{value} is already used"), value=_describe(dev_id))
        seen[dev_id] = kind
        if build is None:
            wearables.append(_wearable(sec, dev_id, kind, parts.wearables))
        else:
            devices.append(build(sec, dev_id))
        sec.done()
    return devices, wearables


def _ble(b: Section) -> BleConfig:
    d = _BLE
    opts = b.table("options")
    options = tuple((k, str(opts.text(k))) for k in opts.data_keys())
    opts.done()
    ble = BleConfig(
        backend=b.choice("backend", ("bleak", "sim"), d.backend),
        options=options,
        connect_timeout_s=b.number("connect_timeout_s", d.connect_timeout_s, lo=0.5),
        probe_s=b.number("probe_s", d.probe_s, lo=0.1),
        probe_timeout_s=b.number("probe_timeout_s", d.probe_timeout_s, lo=0.1),
        battery_report_s=b.number("battery_report_s", d.battery_report_s, lo=1.0),
        reconnect_max_s=b.number("reconnect_max_s", d.reconnect_max_s, lo=0.1),
        unknown_report_s=b.number("unknown_report_s", d.unknown_report_s, lo=0.0),
    )
    b.done()
    return ble


def _posture(p: Section) -> PostureConfig:
    d = _POSTURE
    posture = PostureConfig(
        positions_s=p.number("positions_s", d.positions_s, lo=0.0),
        fleet_interval_s=p.number("fleet_interval_s", d.fleet_interval_s, lo=0.0),
        recall_every_s=p.number("recall_every_s", d.recall_every_s, lo=5.0),
        status_every_s=p.number("status_every_s", d.status_every_s, lo=5.0),
        budget_factor=p.number("budget_factor", d.budget_factor, lo=1.0),
        max_hours=p.number("max_hours", d.max_hours, lo=1.0),
    )
    p.done()
    return posture


def _alarms(a: Section) -> AlarmsConfig:
    d = _ALARMS
    names = a.table("names")
    named = {worker: str(names.text(worker)) for worker in names.data_keys()}
    for worker in named:
        if not valid_id(worker):
            raise names.error(worker, NOT_AN_ID, value=_describe(worker))
    names.done()
    steps = a.str_list("escalation", list(d.escalation))
    if unknown := [s for s in steps if s not in ESCALATION_STEPS]:
        raise a.error("escalation", ONE_OF, choices=", ".join(ESCALATION_STEPS), got=_describe(unknown[0]))
    alarms = AlarmsConfig(
        failover_s=a.number("failover_s", d.failover_s, lo=0.5),
        reserve_share=a.number("reserve_share", d.reserve_share, lo=0.0),
        repeat_every_s=a.number("repeat_every_s", d.repeat_every_s, lo=5.0),
        ack_within_s=a.number("ack_within_s", d.ack_within_s, lo=1.0),
        escalate_every_s=a.number("escalate_every_s", d.escalate_every_s, lo=1.0),
        escalation=tuple(steps),
        language=a.choice("language", ("zh_CN", "en"), d.language),
        timezone=a.text("timezone", d.timezone),
        map_link=a.text("map_link", d.map_link),
        names=named,
    )
    if alarms.reserve_share > 1.0:
        raise a.error(
            "reserve_share", N_("must be at most {hi}, got {value}"), hi=1, value=alarms.reserve_share
        )
    if alarms.timezone and not _zone_ok(alarms.timezone):
        raise a.error(
            "timezone", N_("{value} is not a time zone (Asia/Shanghai, UTC)"), value=repr(alarms.timezone)
        )
    if alarms.map_link and not _link_ok(alarms.map_link):
        raise a.error("map_link", N_("must hold {{lat}} and {{lon}}, where the position goes"))
    a.done()
    return alarms


def _link_ok(template: str) -> bool:
    """A map link template with {lat} and {lon} and no other field."""
    try:
        return "{lat}" in template and "{lon}" in template and bool(template.format(lat="1", lon="2"))
    except (KeyError, IndexError, ValueError):
        return False


def _zone_ok(name: str) -> bool:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def bearer_basics(sec: Section, default: BearerConfig) -> dict[str, Any]:
    """The keys every bearer's section has (`after_s`, `kinds`, `test_every_s`), checked, for its part's
    parser to build its config with."""
    kinds = sec.str_list("kinds", list(default.kinds))
    if unknown := [k for k in kinds if k not in LIFE_SAFETY_KINDS]:
        raise sec.error(
            "kinds",
            N_("{value} is not a life-safety kind ({choices})"),
            value=repr(unknown[0]),
            choices=", ".join(LIFE_SAFETY_KINDS),
        )
    return {
        "after_s": sec.number("after_s", None, lo=0.0),
        "kinds": tuple(kinds),
        "test_every_s": sec.number("test_every_s", default.test_every_s, lo=0.0),
    }


def phone_numbers(sec: Section, key: str) -> tuple[str, ...]:
    """A list of phone numbers (digits, with an optional leading +)."""
    numbers = sec.str_list(key, [])
    for number in numbers:
        digits = number.removeprefix("+")
        if not digits.isdigit() or not 3 <= len(digits) <= 20:
            raise sec.error(
                key,
                N_("{value} is not a phone number (digits, with an optional leading +)"),
                value=repr(number),
            )
    return numbers


def _host_port(sec: Section, key: str, text: str) -> None:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise sec.error(
            key, N_("{value} is not host:port (127.0.0.1:8480, [::1]:8480)"), value=_describe(text)
        )
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise sec.error(
            key, N_("{value} is not an IP address (a listener binds one)"), value=repr(host)
        ) from None


def _web(w: Section, check_files: bool) -> WebConfig:
    d = _WEB
    web = WebConfig(
        listen=w.text("listen", d.listen),
        token_file=w.path("token_file", d.token_file),
        gpsd=w.text("gpsd", d.gpsd),
        nmea_udp=w.str_list("nmea_udp", list(d.nmea_udp)),
        nmea_ais_only=w.flag("nmea_ais_only", d.nmea_ais_only),
    )
    for key, value in (("listen", web.listen), ("gpsd", web.gpsd), *(("nmea_udp", t) for t in web.nmea_udp)):
        if value:
            _host_port(w, key, value)
    if web.listen and web.token_file is None and not is_loopback(web.host_port[0]):
        raise w.error(
            "token_file",
            N_("is required when the page listens beyond loopback (gridedge provision writes one)"),
        )
    if check_files and web.token_file is not None:
        _private_file_ok(w, "token_file", web.token_file)
    w.done()
    return web


def _firmware(f: Section) -> FirmwareConfig:
    d = _FIRMWARE
    firmware = FirmwareConfig(
        max_bytes=f.integer("max_bytes", d.max_bytes, lo=64 * 1024),
        floor_mirror=f.path("floor_mirror", d.floor_mirror),
        smp_timeout_s=f.number("smp_timeout_s", d.smp_timeout_s, lo=0.1),
        reboot_wait_s=f.number("reboot_wait_s", d.reboot_wait_s, lo=1.0),
        download_timeout_s=f.number("download_timeout_s", d.download_timeout_s, lo=1.0),
    )
    f.done()
    return firmware


def _ais_station(a: Section) -> AisConfig:
    d = _AIS
    ais = AisConfig(
        min_interval_s=a.number("min_interval_s", d.min_interval_s, lo=0.0),
        min_course_change_deg=a.number("min_course_change_deg", d.min_course_change_deg, lo=0.0),
        dedup_window_s=a.number("dedup_window_s", d.dedup_window_s, lo=0.0),
        max_vessels=a.integer("max_vessels", d.max_vessels, lo=10, hi=1_000_000),
        outside_min_interval_s=a.number("outside_min_interval_s", d.outside_min_interval_s, lo=0.0),
        beacon_repeat_s=a.number("beacon_repeat_s", d.beacon_repeat_s, lo=5.0),
        beacon_move_m=a.number("beacon_move_m", d.beacon_move_m, lo=1.0),
    )
    a.done()
    return ais


def _trust(t: Section, check_files: bool) -> TrustConfig:
    trust = TrustConfig(command_key=t.path("command_key", None), firmware_key=t.path("firmware_key", None))
    if check_files:
        for key, path in (("command_key", trust.command_key), ("firmware_key", trust.firmware_key)):
            if path is not None and not path.is_file():
                raise t.error(key, N_("cannot read {file_path}"), file_path=path)
    t.done()
    return trust


_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_IRK = re.compile(r"[0-9A-Fa-f]{32}")


def wearable_problem(
    kind: Any,
    worker: Any,
    address: Any,
    irk: Any,
    *,
    kinds: Mapping[str, bool],
    key: Any = None,
    insecure: Any = False,
) -> tuple[str, Problem] | None:
    """(key, problem) for what is wrong with a wearable's description, or None (`kinds`:
    the wearable kinds, True for those whose events need a key)."""
    if kind not in kinds:
        return "kind", Problem(N_("must be one of {choices}"), {"choices": ", ".join(kinds)})
    if not isinstance(worker, str) or not valid_id(worker):
        missing = worker is None or worker == ""
        return "worker", Problem(
            N_("is required: the worker who wears it") if missing else N_("must match [A-Za-z0-9._-]{1,64}")
        )
    if (address is None) == (irk is None):
        return "address", Problem(N_("give exactly one of address or irk"))
    if address is not None and (not isinstance(address, str) or not _MAC.fullmatch(address)):
        return "address", Problem(N_("must be AA:BB:CC:DD:EE:FF"))
    if irk is not None and (not isinstance(irk, str) or not _IRK.fullmatch(irk)):
        return "irk", Problem(
            N_("must be 32 hex digits (the identity resolving key, most significant byte first)")
        )
    if not isinstance(insecure, bool):
        return "insecure", Problem(N_("must be true or false"))
    if key is not None and (not isinstance(key, str) or not _IRK.fullmatch(key)):
        return "key", Problem(N_("must be 32 hex digits (the wearable's event key, docs/ble-profiles.md)"))
    if key is not None and insecure:
        return "insecure", Problem(N_("a wearable with a key authenticates its events; drop insecure"))
    if kinds[kind] and key is None and not insecure:
        return "key", Problem(
            N_(
                "is required: the 32-hex-digit key its events are authenticated with (without it "
                "anyone copying its address could raise or cancel its alarms); insecure = true "
                "believes a wearable that cannot authenticate"
            )
        )
    return None


def _wearable(sec: Section, dev_id: str, kind: str, kinds: Mapping[str, bool]) -> WearableConfig:
    worker = sec.raw("worker")
    address, irk = sec.raw("address"), sec.raw("irk")
    key, insecure = sec.raw("key"), sec.raw("insecure")
    insecure = False if insecure is None else insecure
    problem = wearable_problem(kind, worker, address, irk, kinds=kinds, key=key, insecure=insecure)
    if problem is not None:
        raise sec.error(*problem)
    fw_class = sec.text("fw_class", None)
    if fw_class is not None and not valid_id(fw_class):
        raise sec.error("fw_class", NOT_AN_ID, value=_describe(fw_class))
    return WearableConfig(
        id=dev_id,
        kind=kind,
        worker=str(worker),
        address=address.upper() if isinstance(address, str) else None,
        irk=irk.lower() if isinstance(irk, str) else None,
        fw_class=fw_class,
        smp_port=sec.text("smp_port", None),
        key=key.lower() if isinstance(key, str) else None,
        insecure=bool(insecure),
    )


def _ids(sec: Section, key: str) -> list[str]:
    values = sec.str_list(key, [])
    for v in values:
        if not valid_id(v):
            raise sec.error(key, NOT_AN_ID, value=_describe(v))
    return list(values)


def load(path: Path | str, *, parts: PartCatalog, check_files: bool = True) -> Config:
    """Read and validate a config file (`parts`: the catalog of drivers/parts.py); its
    path, and every path in it, absolute from here on (whatever the working directory)."""
    p = Path(path).absolute()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", N_("cannot read config: {why}"), file=str(p), why=exc.strerror) from None
    except UnicodeDecodeError:
        raise ConfigError("", N_("config is not UTF-8 text"), file=str(p)) from None
    return parse(text, parts=parts, file=str(p), base=p.resolve().parent, check_files=check_files)


def default_path() -> Path:
    return Path(os.environ.get("GRIDEDGE_CONFIG", str(DEFAULT_PATH)))
