"""Provisioning: a gateway's keys, its page token and a starter config, one gateway at a
time (`gridedge provision --id`) or a fleet from a spreadsheet (`--from stations.csv`),
with each gateway's key fingerprint and a QR code of it for the registration sheet."""

from __future__ import annotations

import csv
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from drivers.parts import PARTS, Parts
from floor.config import NOT_AN_ID, MqttConfig, OutboxConfig, valid_id, wearable_problem
from floor.envelope import kid_of, private_pem, public_pem, raw_public
from floor.errors import N_, Problem
from floor.fsutil import write_atomic, write_private


class ProvisionError(Exception):
    """Something in the request cannot be provisioned (named, with where); the message is a
    template with its values, shown in the technician's language (edge/i18n.py)."""

    def __init__(self, message: str, **values: object) -> None:
        self.problem = Problem(message, values)
        super().__init__(str(self.problem))


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
    extra_toml: str = "",
) -> Provisioned:
    """Keys (Ed25519; with `csr` a P-256 TLS key and its CSR), the page token and the
    starter config (`devices_toml` in place of the example receiver; `extra_toml` after it)."""
    if not valid_id(gw_id):
        raise ProvisionError(NOT_AN_ID, value=repr(gw_id))
    system = _system_layout(out)
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path, cfg_path = out / "gateway.key", out / "gateway.pub", out / "gateway.toml"
    if key_path.exists() and not force:
        raise FileExistsError(key_path)
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
        _write_starter(
            cfg_path,
            gw_id,
            system=system,
            state_dir=state_dir,
            csr=csr,
            ids=ids,
            devices_toml=devices_toml,
            extra_toml=extra_toml,
        )
        done.written.append(str(cfg_path))
    return done


def _write_starter(
    cfg_path: Path,
    gw_id: str,
    *,
    system: bool,
    state_dir: str | None,
    csr: bool,
    ids: tuple[int, int] | None,
    devices_toml: str,
    extra_toml: str,
) -> None:
    """The starter config, written last and whole: a unit waiting for it sees a finished set."""
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
    text += ("\n" + extra_toml) if extra_toml else ""
    write_atomic(cfg_path, text.encode())
    if ids is not None:  # the config is for the service's group to read
        os.chown(cfg_path, 0, ids[1])
        os.chmod(cfg_path, 0o640)
    else:
        os.chmod(cfg_path, 0o644)


# stations.csv: one row per device, grouped by gateway; a gateway with no device has one
# row with the device columns empty. Wearables need worker and address (or irk); buttons
# and tags their key. Stream devices take their part's columns (port or url, baudrate).
WEARABLE_COLUMNS = ("worker", "address", "irk", "key")


def columns(parts: Parts = PARTS) -> tuple[str, ...]:
    """The stations sheet's columns: the wearables' and every stream device part's."""
    streams = dict.fromkeys(c for part in parts.devices.values() for c in part.columns)
    return ("gateway", "device", "kind", *WEARABLE_COLUMNS, *streams)


COLUMNS = columns()
AT_ROW = N_("{where}: {problem}")


def read_stations(path: Path) -> dict[str, list[dict[str, str]]]:
    """The gateways of a stations file and their devices, checked; errors name the row."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
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
        fleet: dict[str, list[dict[str, str]]] = {}
        for n, row in enumerate(reader, 2):
            cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
            gw = cells.get("gateway", "")
            if not valid_id(gw):
                raise ProvisionError(
                    AT_ROW, where=_row(path, n), problem=Problem(NOT_AN_ID, {"value": repr(gw)})
                )
            devices = fleet.setdefault(gw, [])
            if cells.get("device"):
                _check_device(path, n, cells)
                if any(d["device"] == cells["device"] for d in devices):
                    raise ProvisionError(
                        N_("{where}: device {value} twice on {gw}"),
                        where=_row(path, n),
                        value=repr(cells["device"]),
                        gw=gw,
                    )
                devices.append(cells)
    if not fleet:
        raise ProvisionError(N_("{file_path}: no gateways"), file_path=path)
    return fleet


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


def devices_toml(devices: Iterable[dict[str, str]]) -> str:
    out = []
    for d in devices:
        lines = ["[[devices]]", f'id = "{d["device"]}"', f'kind = "{d["kind"]}"']
        part = PARTS.devices.get(d["kind"])
        keys = WEARABLE_COLUMNS if part is None else part.columns
        for k in keys:
            if d.get(k):
                lines.append(f"{k} = {d[k]}" if k == "baudrate" else f'{k} = "{d[k]}"')
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def provision_fleet(
    stations: Path,
    out: Path,
    *,
    template: Path | None = None,
    csr: bool = False,
    force: bool = False,
    owner: str = "gridedge",
) -> list[Provisioned]:
    """One directory per gateway under `out`, and `out/registration.csv` (id, kid,
    fingerprint) with a QR code per gateway (`fingerprint.svg`) for the sheet."""
    import segno

    fleet = read_stations(stations)
    extra = template.read_text(encoding="utf-8") if template is not None else ""
    done = []
    for gw, devices in fleet.items():
        p = provision_one(
            out / gw,
            gw,
            csr=csr,
            force=force,
            owner=owner,
            devices_toml=devices_toml(devices),
            extra_toml=extra.replace("{id}", gw),
        )
        qr = segno.make(qr_text(p), error="m")
        qr.save(str(out / gw / "fingerprint.svg"), scale=4)
        p.written.append(str(out / gw / "fingerprint.svg"))
        done.append(p)
    with open(out / "registration.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["gateway", "kid", "sha256"])
        for p in done:
            w.writerow([p.gw_id, p.kid, p.fingerprint.replace(" ", "")])
    return done


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
