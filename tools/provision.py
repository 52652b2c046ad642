"""Provisioning: a gateway's keys, its page token and a starter config, one gateway at a
time (`gridedge provision --id`) or a fleet from a spreadsheet (`--from stations.csv`),
with each gateway's key fingerprint and a QR code of it for the registration sheet."""

from __future__ import annotations

import csv
import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from drivers.parts import PARTS, Parts
from floor.config import NOT_AN_ID, MqttConfig, OutboxConfig, valid_id, wearable_problem
from floor.envelope import kid_of, private_pem, public_pem, raw_public
from floor.errors import N_, ConfigError, Problem
from floor.fsutil import write_atomic, write_private


class ProvisionError(Exception):
    """Something in the request cannot be provisioned (named, with where); the message is a
    template with its values, shown in the technician's language (edge/i18n.py). A sheet
    with several bad rows is one error with every row's problem (`problems`)."""

    def __init__(self, message: str, **values: object) -> None:
        self.problem = Problem(message, values)
        self.problems = [self.problem]
        super().__init__(str(self.problem))

    @classmethod
    def of(cls, problems: list[Problem]) -> ProvisionError:
        err = cls(problems[0].template, **problems[0].values)
        err.problems = problems
        return err


STARTER = """\
# gridedge gateway configuration (see docs/operations.md)
[gateway]
id = "{id}"
key = "gateway.key"          # Ed25519 private key, PEM PKCS8, mode 0600
state_dir = "{state_dir}"{state_note}
status_socket = "{status_socket}"  # gridedge status asks here

[mqtt]
host = "{mqtt.host}"
port = {mqtt.port}
topic_prefix = "{mqtt.topic_prefix}"
{tls}
[outbox]
max_bytes = {outbox.max_bytes}
batch_ms = {outbox.batch_ms}

[web]
listen = "127.0.0.1:8480"    # the status page and /metrics; "0.0.0.0:8480" on a maintenance interface
token_file = "web.token"     # written with this file: open http://HOST:8480/?token=<its contents>

[[devices]]
id = "gnss0"
kind = "gnss"
port = "/dev/ttyUSB0"        # better: its /dev/serial/by-id/... name, stable across re-plugs
baudrate = 9600
min_interval_s = 1.0         # 0 reports every fix epoch
min_distance_m = 0.0         # 0 disables the distance trigger
"""
TLS_OFF = """\
# tls_ca = "ca.crt"          # plaintext to a non-loopback host needs insecure = true
# tls_cert = "gateway.crt"
# tls_key = "gateway.tls.key"
"""
TLS_ON = """\
# Once the fleet's CA has signed gateway.csr into gateway.crt: set host and port to the
# broker's, and uncomment these three.
# tls_ca = "ca.crt"
# tls_cert = "gateway.crt"
# tls_key = "gateway.tls.key"  # made by provision --csr, mode 0600
"""
SYSTEM_DIR = Path("/etc/gridedge")


def _system_layout(out: Path) -> bool:
    """Provisioning the packaged gateway (/etc/gridedge) rather than a directory of one's own."""
    return out.resolve() == SYSTEM_DIR


def _service_ids(user: str) -> tuple[int, int] | None:
    """(uid, gid) of the service user when we are root and it exists: keys are made its own."""
    import grp
    import pwd

    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid
    except KeyError:
        return None


@dataclass
class Provisioned:
    gw_id: str
    out: Path
    public_key: Ed25519PublicKey
    written: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the raw public key, in groups of four hex digits (what the platform registers)."""
        digest = hashlib.sha256(raw_public(self.public_key)).hexdigest()
        return " ".join(digest[i : i + 4] for i in range(0, 64, 4))

    @property
    def kid(self) -> str:
        return kid_of(self.public_key).hex()


def provision_one(
    out: Path,
    gw_id: str,
    *,
    csr: bool = False,
    force: bool = False,
    owner: str = "gridedge",
    state_dir: str | None = None,
    devices_toml: str = "",
    layers: Sequence[tuple[str, str]] = (),
    system: bool | None = None,
) -> Provisioned:
    """Keys (Ed25519; with `csr` a P-256 TLS key and its CSR), the page token and the
    starter config (`devices_toml` in place of the example receiver; each layer, (its
    name, TOML), merged into it: a fleet's template, a gateway's row). `system`: paths for
    the installed gateway (/var/lib/gridedge, /run/gridedge), by default when `out` is
    /etc/gridedge. The config is checked before anything is written."""
    if not valid_id(gw_id):
        raise ProvisionError(NOT_AN_ID, value=repr(gw_id))
    system = _system_layout(out) if system is None else system
    key_path, pub_path, cfg_path = out / "gateway.key", out / "gateway.pub", out / "gateway.toml"
    if key_path.exists() and not force:
        raise FileExistsError(key_path)
    text = starter_text(gw_id, system=system, state_dir=state_dir, csr=csr, devices_toml=devices_toml)
    text = checked_config(gw_id, merged(text, layers), out)
    out.mkdir(parents=True, exist_ok=True)
    ids = _service_ids(owner)
    key = Ed25519PrivateKey.generate()
    done = Provisioned(gw_id, out, key.public_key())
    write_private(key_path, private_pem(key))
    done.written.append(f"{key_path} (0600)")
    private = [key_path]
    pub_path.write_bytes(public_pem(key.public_key()))
    done.written.append(str(pub_path))
    token_path = out / "web.token"
    if not token_path.exists() or force:
        write_private(token_path, (secrets.token_urlsafe(24) + "\n").encode())
        private.append(token_path)
        done.written.append(f"{token_path} (0600)")
    if csr:
        tls_key, csr_path = write_csr(out, gw_id)
        private.append(tls_key)
        done.written += [f"{tls_key} (0600)", str(csr_path)]
    if ids is not None:
        # the service reads its keys and no one else does; the config is for its group to read
        for path in private:
            os.chown(path, *ids)
        done.written = [w.replace("(0600)", f"(0600, {owner})") for w in done.written]
    if not cfg_path.exists() or force:
        _write_config(cfg_path, text, ids)
        done.written.append(str(cfg_path))
    return done


def starter_text(gw_id: str, *, system: bool, state_dir: str | None, csr: bool, devices_toml: str) -> str:
    """The starter config's text (with `devices_toml` in place of the example receiver)."""
    state = state_dir or ("/var/lib/gridedge" if system else "state")
    socket_path = "/run/gridedge/gridedge.sock" if system else f"{state}/gridedge.sock"
    text = STARTER.format(
        id=gw_id,
        state_dir=state,
        state_note="" if system else "          # relative to this file",
        status_socket=socket_path,
        tls=TLS_ON if csr else TLS_OFF,
        mqtt=MqttConfig(),  # the defaults, from the one place they are written
        outbox=OutboxConfig(),
    )
    if devices_toml:
        text = text[: text.index("[[devices]]")] + devices_toml
    return text


def merged(text: str, layers: Sequence[tuple[str, str]]) -> str:
    """`text` with each layer's TOML merged in, comments kept: a layer's key replaces the
    same key (a template's `[mqtt] host`), its tables go into the same tables, its
    `[[devices]]` are added to the devices."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    if not any(layer.strip() for _name, layer in layers):
        return text
    doc = tomlkit.parse(text)
    for name, layer in layers:
        try:
            _merge(doc, tomlkit.parse(layer))
        except TOMLKitError as exc:
            raise ProvisionError(N_("{file_path}: not TOML: {why}"), file_path=name, why=str(exc)) from None
    return tomlkit.dumps(doc)


def _merge(into: Any, layer: Any) -> None:
    from tomlkit.items import AoT, Table

    for key, value in layer.items():
        mine = into.get(key)
        if isinstance(value, Table) and isinstance(mine, Table):
            _merge(mine, value)
        elif isinstance(value, AoT) and isinstance(mine, AoT):
            for table in value:
                mine.append(table)
        else:
            into[key] = value


def checked_config(gw_id: str, text: str, out: Path) -> str:
    """The config as `gridedge check` will find it (its files aside: not written yet)."""
    from drivers.parts import parse_config

    try:
        parse_config(text, file=str(out / "gateway.toml"), base=out, check_files=False)
    except ConfigError as exc:
        raise ProvisionError(
            N_("{gw}: the config would not load: {key}: {problem}"),
            gw=gw_id,
            key=exc.path or "-",
            problem=exc.problem,
        ) from None
    return text


def _write_config(cfg_path: Path, text: str, ids: tuple[int, int] | None) -> None:
    """The config, written last and whole: a unit waiting for it sees a finished set."""
    write_atomic(cfg_path, text.encode())
    if ids is not None:  # the config is for the service's group to read
        os.chown(cfg_path, 0, ids[1])
        os.chmod(cfg_path, 0o640)
    else:
        os.chmod(cfg_path, 0o644)


# stations.csv: one row per device, grouped by gateway; a gateway with no device has one
# row with the device columns empty. Wearables need worker and address (or irk); buttons
# and tags their key. Stream devices take their part's columns (port or url, baudrate,
# allow). A gateway's `broker` (host or host:port) goes in any of its rows.
WEARABLE_COLUMNS = ("worker", "address", "irk", "key")
GATEWAY_COLUMNS = ("broker",)
LIST_COLUMNS = frozenset({"allow"})  # several values in one cell, separated by spaces


def columns(parts: Parts = PARTS) -> tuple[str, ...]:
    """The stations sheet's columns: the gateway's, the wearables' and every stream
    device part's."""
    streams = dict.fromkeys(c for part in parts.devices.values() for c in part.columns)
    return ("gateway", *GATEWAY_COLUMNS, "device", "kind", *WEARABLE_COLUMNS, *streams)


COLUMNS = columns()
AT_ROW = N_("{where}: {problem}")


@dataclass
class Station:
    """One gateway of the sheet: its devices' rows and its own settings."""

    devices: list[dict[str, str]] = field(default_factory=list)
    broker: str = ""


def read_stations(path: Path) -> dict[str, Station]:
    """The gateways of a stations file and their devices, checked; every bad row named
    (not only the first). Commas or semicolons separate the cells (a spreadsheet set to
    a language that writes decimal commas saves with semicolons)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        head = f.readline()
        f.seek(0)
        delimiter = ";" if head.count(";") > head.count(",") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames is None or "gateway" not in reader.fieldnames:
            raise ProvisionError(
                N_("{file_path}: the first row must name the columns (gateway, device, kind, ...)"),
                file_path=path,
            )
        unknown = [c for c in reader.fieldnames if c not in COLUMNS]
        if unknown:
            raise ProvisionError(
                N_("{file_path}: unknown column {value} (known: {choices})"),
                file_path=path,
                value=repr(unknown[0]),
                choices=", ".join(COLUMNS),
            )
        fleet: dict[str, Station] = {}
        problems: list[Problem] = []
        for n, row in enumerate(reader, 2):
            cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
            problem = _take_row(fleet, path, n, cells)
            if problem is not None:
                problems.append(problem)
    if problems:
        raise ProvisionError.of(problems)
    if not fleet:
        raise ProvisionError(N_("{file_path}: no gateways"), file_path=path)
    return fleet


def _take_row(fleet: dict[str, Station], path: Path, n: int, cells: dict[str, str]) -> Problem | None:
    """One row into the fleet; what is wrong with it, or None."""
    gw = cells.get("gateway", "")
    if not valid_id(gw):
        return Problem(AT_ROW, {"where": _row(path, n), "problem": Problem(NOT_AN_ID, {"value": repr(gw)})})
    station = fleet.setdefault(gw, Station())
    if broker := cells.get("broker", ""):
        if station.broker and station.broker != broker:
            return Problem(
                N_("{where}: broker {value} differs from {gw}'s earlier row ({other})"),
                {"where": _row(path, n), "value": repr(broker), "gw": gw, "other": station.broker},
            )
        if _host_port(broker) is None:
            return Problem(
                N_("{where}: broker {value} is not HOST or HOST:PORT"),
                {"where": _row(path, n), "value": repr(broker)},
            )
        station.broker = broker
    if not cells.get("device"):
        return None
    try:
        _check_device(path, n, cells)
    except ProvisionError as exc:
        return exc.problem
    if any(d["device"] == cells["device"] for d in station.devices):
        return Problem(
            N_("{where}: device {value} twice on {gw}"),
            {"where": _row(path, n), "value": repr(cells["device"]), "gw": gw},
        )
    station.devices.append(cells)
    return None


def _host_port(broker: str) -> tuple[str, int | None] | None:
    host, sep, port = broker.rpartition(":") if broker.count(":") == 1 else (broker, "", "")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    if not host or any(c.isspace() or c in "\"'[]" for c in host):
        return None
    return host, int(port) if sep else None


def _row(path: Path, n: int) -> Problem:
    return Problem(N_("{file_path} row {n}"), {"file_path": path, "n": n})


def _check_device(path: Path, n: int, d: dict[str, str]) -> None:
    where = _row(path, n)
    if not valid_id(d["device"]):
        bad = Problem(N_("device {value} is not an id"), {"value": repr(d["device"])})
        raise ProvisionError(AT_ROW, where=where, problem=bad)
    kind = d.get("kind", "")
    if kind in PARTS.devices:
        if bool(d.get("port")) == bool(d.get("url")):
            raise ProvisionError(
                N_("{where}: a {kind} receiver needs port (serial) or url, one of them"),
                where=where,
                kind=kind,
            )
        if d.get("baudrate") and not d["baudrate"].isdigit():
            raise ProvisionError(
                N_("{where}: baudrate {value} is not a number"), where=where, value=repr(d["baudrate"])
            )
        return
    if kind not in PARTS.wearables:
        raise ProvisionError(
            N_("{where}: kind {value} is none of {choices}"),
            where=where,
            value=repr(kind),
            choices=", ".join((*PARTS.devices, *PARTS.wearables)),
        )
    problem = wearable_problem(
        kind,
        d.get("worker"),
        d.get("address") or None,
        d.get("irk") or None,
        kinds=PARTS.wearables,
        key=d.get("key") or None,
    )
    if problem is not None:
        raise ProvisionError(N_("{where}: {key} {problem}"), where=where, key=problem[0], problem=problem[1])


def _toml_value(key: str, value: str) -> str:
    if key == "baudrate":
        return value
    if key in LIST_COLUMNS:
        return "[" + ", ".join(_quoted(v) for v in value.split()) + "]"
    return _quoted(value)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def devices_toml(devices: Iterable[dict[str, str]]) -> str:
    out = []
    for d in devices:
        lines = ["[[devices]]", f'id = "{d["device"]}"', f'kind = "{d["kind"]}"']
        part = PARTS.devices.get(d["kind"])
        keys = WEARABLE_COLUMNS if part is None else part.columns
        for k in keys:
            if d.get(k):
                lines.append(f"{k} = {_toml_value(k, d[k])}")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def broker_toml(broker: str) -> str:
    """A gateway's `broker` cell as the [mqtt] settings it stands for."""
    parsed = _host_port(broker)
    if parsed is None:
        return ""
    host, port = parsed
    return f"[mqtt]\nhost = {_quoted(host)}\n" + (f"port = {port}\n" if port is not None else "")


def provision_fleet(
    stations: Path,
    out: Path,
    *,
    template: Path | None = None,
    csr: bool = False,
    force: bool = False,
    owner: str = "gridedge",
    state_dir: str | None = None,
) -> list[Provisioned]:
    """One directory per gateway under `out`, and `out/registration.csv` (id, kid,
    fingerprint) with a QR code per gateway (`fingerprint.svg`, its id and fingerprint
    printed under it) for the sheet. The configs are for installed gateways: state in
    /var/lib/gridedge unless `state_dir` says otherwise. Every gateway's config is
    checked before any is written."""
    fleet = read_stations(stations)
    extra = template.read_text(encoding="utf-8") if template is not None else ""
    layers = {
        gw: [(str(template), extra.replace("{id}", gw)), (f"{stations} ({gw})", broker_toml(st.broker))]
        for gw, st in fleet.items()
    }
    problems = []
    for gw, st in fleet.items():  # all of them, before anything is written
        text = starter_text(
            gw, system=True, state_dir=state_dir, csr=csr, devices_toml=devices_toml(st.devices)
        )
        try:
            checked_config(gw, merged(text, layers[gw]), out / gw)
        except ProvisionError as exc:
            problems += exc.problems
    if problems:
        raise ProvisionError.of(problems)
    done = []
    for gw, st in fleet.items():
        p = provision_one(
            out / gw,
            gw,
            csr=csr,
            force=force,
            owner=owner,
            state_dir=state_dir,
            devices_toml=devices_toml(st.devices),
            layers=layers[gw],
            system=True,
        )
        (out / gw / "fingerprint.svg").write_text(qr_svg(p), encoding="utf-8")
        p.written.append(str(out / gw / "fingerprint.svg"))
        done.append(p)
    with open(out / "registration.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["gateway", "kid", "sha256"])
        for p in done:
            w.writerow([p.gw_id, p.kid, p.fingerprint.replace(" ", "")])
    return done


def qr_svg(p: Provisioned) -> str:
    """The QR code of the gateway's id and fingerprint, with both printed under it, so a
    sheet of them is read by eye as well as by a scanner."""
    import io
    from xml.sax.saxutils import escape

    import segno

    buf = io.BytesIO()
    segno.make(qr_text(p), error="m").save(buf, kind="svg", scale=4, xmldecl=False, svgns=True)
    svg = buf.getvalue().decode()
    width = int(svg.split('width="', 1)[1].split('"', 1)[0])
    height = int(svg.split('height="', 1)[1].split('"', 1)[0])
    groups = [p.fingerprint[i : i + 39] for i in range(0, len(p.fingerprint), 40)]
    lines = [p.gw_id, *groups]
    text_h = 14 * len(lines) + 6
    full_w = max(width, 8 * 40)
    caption = "".join(
        f'<text x="{full_w // 2}" y="{height + 14 * (i + 1)}" text-anchor="middle" '
        f'font-family="monospace" font-size="{13 if i == 0 else 11}">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    head, body = svg.split(">", 1)
    head = head.replace(f'width="{width}"', f'width="{full_w}"')
    head = head.replace(f'height="{height}"', f'height="{height + text_h}"')
    code = body.strip().removesuffix("</svg>")
    qr = f'<g transform="translate({(full_w - width) // 2},0)">{code}</g>{caption}</svg>'
    return '<?xml version="1.0" encoding="utf-8"?>\n' + head + ">" + qr


def qr_text(p: Provisioned) -> str:
    """What a gateway's QR code says: its id and its key's SHA-256, for the platform's registration."""
    return f"gridedge:{p.gw_id}:sha256:{p.fingerprint.replace(' ', '')}"


def qr_terminal(p: Provisioned) -> str:
    import io

    import segno

    buf = io.StringIO()
    segno.make(qr_text(p), error="m").terminal(out=buf, compact=True, border=2)
    return buf.getvalue()


def write_csr(out: Path, gw_id: str) -> tuple[Path, Path]:
    """A P-256 TLS key (0600) and a CSR with CN = the gateway id, for the private CA to sign.

    The TLS identity is separate from the Ed25519 signing key: the CA and the broker
    may rotate one without touching the other, and P-256 is what every broker's TLS
    stack accepts.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    key_path, csr_path = out / "gateway.tls.key", out / "gateway.csr"
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gw_id)]))
        .sign(key, hashes.SHA256())
    )
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return key_path, csr_path
