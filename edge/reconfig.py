"""`config.apply`: signed config bundles, applied in place, rolled back when unhealthy.

A bundle is a COSE_Sign1 signed by the command key with the payload
`{"v": 1, "gw": <gateway id>, "config": <TOML text>, "rotation": <bytes or null>}`.
It is validated exactly like a config file (same loader, same errors), may not
change the gateway id, and may change `[trust]` only with a rotation statement: a
COSE_Sign1 by the *current* command key over `{"v": 1, "type": "trust.rotation",
"gw": <id>, "command_key": <PEM text>}` whose key is then kept with the applied config
and used instead of the one the config names. The technician's file is never
rewritten; the config in effect before is kept; a pending record in the state
directory makes the gateway roll back by itself if it is not healthy (connected,
outbox draining) within `rollback_after_s` of boot time, even across a crash or a
failed start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.commands import CommandError
from floor import config as config_mod
from floor.clock import boot_id, boottime_ms
from floor.config import Config, PartCatalog
from floor.envelope import keyring, load_public_key, verify
from floor.errors import N_, ConfigError, EnvelopeError
from floor.fsutil import fsync_dir, write_atomic

log = logging.getLogger(__name__)

PENDING = "config-pending.json"
DEFAULT_ROLLBACK_S = 60.0


# What a bundle may not change without a rotation statement (besides [trust] itself);
# gateway.id and gateway.state_dir it may not change at all. Everything else it may.
ANCHORS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("gateway.key", lambda c: c.gateway.key),
    ("mqtt.tls_ca", lambda c: c.mqtt.tls_ca),
    ("mqtt.tls_cert", lambda c: c.mqtt.tls_cert),
    ("mqtt.tls_key", lambda c: c.mqtt.tls_key),
    ("mqtt.insecure", lambda c: c.mqtt.insecure),
    ("firmware.floor_mirror", lambda c: c.firmware.floor_mirror),
)


class BundleError(Exception):
    """A bundle that must not be applied; `code` goes into cmd.result."""

    def __init__(self, code: CommandError, detail: str = "") -> None:
        super().__init__(f"{code}{': ' + detail if detail else ''}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Bundle:
    text: str
    cfg: Config
    rotation_key_pem: bytes | None


def _key_bytes(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return load_public_key(path.read_bytes()).public_bytes_raw()
    except (OSError, ValueError):
        return None


def _signed_payload(data: bytes, trust: Ed25519PublicKey, code: CommandError) -> Any:
    """The payload of a COSE_Sign1 by the current command key, or BundleError(code)."""
    try:
        return verify(data, keyring(trust)).payload
    except EnvelopeError as exc:
        raise BundleError(code, exc.reason.value) from None


def open_bundle(data: Any, trust: Ed25519PublicKey, current: Config) -> Bundle:
    """Verify and validate a bundle against the running config; nothing is written."""
    if not isinstance(data, bytes):
        raise BundleError(CommandError.BAD_ARGS, "bundle must be bytes")
    return bundle_from(_signed_payload(data, trust, CommandError.BAD_BUNDLE), trust, current)


def bundle_from(payload: Any, trust: Ed25519PublicKey, current: Config) -> Bundle:
    """A verified bundle's payload, validated against the running config."""
    if not isinstance(payload, dict) or payload.get("v") != 1 or not isinstance(payload.get("config"), str):
        raise BundleError(CommandError.BAD_BUNDLE, "payload")
    if payload.get("gw") != current.gateway.id:
        raise BundleError(CommandError.WRONG_TARGET, "bundle is for another gateway")
    text = payload["config"]
    rotation = payload.get("rotation")
    rotation_pem: bytes | None = None
    if rotation is not None:
        rotation_pem = _rotation_key(rotation, trust, current.gateway.id)
    try:
        new = config_mod.parse(
            text, parts=current.parts, file=str(current.file), base=current.file.parent, check_files=False
        )
    except ConfigError as exc:
        raise BundleError(CommandError.BAD_CONFIG, str(exc)) from None
    if new.gateway.id != current.gateway.id:
        raise BundleError(CommandError.BAD_CONFIG, "gateway.id cannot be changed by a bundle")
    if new.gateway.state_dir != current.gateway.state_dir:
        # the applied config, the outbox and the replay state live there
        raise BundleError(CommandError.BAD_CONFIG, "gateway.state_dir cannot be changed by a bundle")
    moved = [name for name, get in ANCHORS if get(new) != get(current)]
    if moved and rotation_pem is None:
        # who the gateway is, whom it trusts on the wire, and where its floor is kept
        why = f"{', '.join(moved)} changed: that needs a rotation signed by the current key"
        raise BundleError(CommandError.TRUST_CHANGE_REFUSED, why)
    new_trust = new.trust
    rotated = current.trust.command_key
    in_applied = rotated is not None and rotated.parent == applied_dir(current.gateway.state_dir)
    if rotation_pem is None and in_applied:
        new_trust = replace(new_trust, command_key=rotated)  # an earlier rotation's key stays in force
    # Any change of a trust anchor (even pointing at another file already on disk,
    # such as the gateway's own public key) needs the current key's rotation statement.
    same_key = _key_bytes(new_trust.command_key) == trust.public_bytes_raw()
    trust_changed = new_trust != current.trust or not same_key
    if trust_changed and (rotation_pem is None or new.trust.command_key is None):
        raise BundleError(
            CommandError.TRUST_CHANGE_REFUSED, "[trust] changes need a rotation signed by the current key"
        )
    return Bundle(text=text, cfg=new, rotation_key_pem=rotation_pem)


def _rotation_key(rotation: Any, trust: Ed25519PublicKey, gw: str) -> bytes:
    if not isinstance(rotation, bytes):
        raise BundleError(CommandError.BAD_BUNDLE, "rotation must be a COSE_Sign1")
    stmt = _signed_payload(rotation, trust, CommandError.TRUST_CHANGE_REFUSED)
    if not isinstance(stmt, dict) or stmt.get("type") != "trust.rotation" or stmt.get("gw") != gw:
        raise BundleError(CommandError.TRUST_CHANGE_REFUSED, "rotation statement")
    pem = stmt.get("command_key")
    if not isinstance(pem, str):
        raise BundleError(CommandError.TRUST_CHANGE_REFUSED, "rotation has no command_key")
    try:
        load_public_key(pem.encode())
    except ValueError:
        raise BundleError(
            CommandError.TRUST_CHANGE_REFUSED, "rotation key is not an Ed25519 public key"
        ) from None
    return pem.encode()


# The applied config lives in the state directory, which the unit lets the gateway
# write (ProtectSystem=strict keeps /etc/gridedge read-only): `applied/gateway.toml`,
# `applied/origin.json` (the technician's file it was applied over, by hash) and, after
# a rotation, `applied/command_key.pub`. It wins over the technician's file until that
# file changes (the technician's edit is newer) or `gridedge config reset` removes it.
APPLIED = "applied"
PREVIOUS = "applied.prev"
ORIGIN = "origin.json"
ROTATED_KEY = "command_key.pub"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def applied_dir(state_dir: Path) -> Path:
    return state_dir / APPLIED


def _read_origin(directory: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((directory / ORIGIN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def applied_state(base: Config) -> str:
    """`none`, `in_effect` or `superseded` (the technician's file changed after the apply)."""
    directory = applied_dir(base.gateway.state_dir)
    try:
        if not (directory / "gateway.toml").is_file():
            return "none"
    except PermissionError:
        raise ConfigError(
            "gateway.state_dir",
            N_("cannot read {file_path}: run this as root or as the gateway's user"),
            file=str(base.file),
            file_path=base.gateway.state_dir,
        ) from None
    origin = _read_origin(directory)
    try:
        same = origin is not None and origin.get("base_sha256") == _sha256(base.file)
    except OSError:
        same = False
    return "in_effect" if same else "superseded"


def load_effective(path: Path, *, parts: PartCatalog, check_files: bool = True) -> Config:
    """The config in effect: the platform's applied file over `path` when there is one."""
    base = config_mod.load(path, parts=parts, check_files=check_files)
    if applied_state(base) != "in_effect":
        return base
    directory = applied_dir(base.gateway.state_dir)
    applied = directory / "gateway.toml"
    try:
        text = applied.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "", N_("cannot read the applied config: {why}"), file=str(applied), why=exc
        ) from None
    cfg = config_mod.parse(
        text, parts=parts, file=str(applied), base=base.file.resolve().parent, check_files=check_files
    )
    rotated = directory / ROTATED_KEY
    if rotated.is_file():
        cfg = replace(cfg, trust=replace(cfg.trust, command_key=rotated))
    return replace(cfg, file=base.file, applied=applied)


def set_aside_superseded(base: Config) -> Path | None:
    """Move an applied config the technician's edit made stale out of the way; where it went."""
    if applied_state(base) != "superseded":
        return None
    directory = applied_dir(base.gateway.state_dir)
    aside = directory.with_name(f"{APPLIED}.superseded-{int(time.time())}")
    directory.rename(aside)
    return aside


def _write_dir(directory: Path, files: dict[str, bytes]) -> None:
    """Create `directory` whole, or not at all (built beside it, then renamed in)."""
    tmp = directory.with_name(directory.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    for name, data in files.items():
        write_atomic(tmp / name, data)
    tmp.rename(directory)
    fsync_dir(directory.parent)


def apply_bundle(bundle: Bundle, current: Config, command_id: str, rollback_after_s: float) -> Config:
    """Write the new config (keeping the one in effect), record the pending check; return it loaded."""
    state = current.gateway.state_dir
    if read_pending(state) is not None:
        raise BundleError(CommandError.BUSY, "another config.apply is waiting for its health check")
    directory, previous = applied_dir(state), state / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
        directory.rename(previous)
    files = {"gateway.toml": bundle.text.encode()}
    if bundle.rotation_key_pem is not None:
        files[ROTATED_KEY] = bundle.rotation_key_pem
    elif (previous / ROTATED_KEY).is_file():
        files[ROTATED_KEY] = (previous / ROTATED_KEY).read_bytes()  # a rotation holds until rotated again
    origin = {"base_sha256": _sha256(current.file), "command": command_id}
    files[ORIGIN] = json.dumps(origin).encode()
    pending = {
        "id": command_id,
        "boot_id": boot_id(),
        "deadline_tb": boottime_ms() + int(rollback_after_s * 1000),
        "window_ms": int(rollback_after_s * 1000),
    }
    write_atomic(state / PENDING, json.dumps(pending).encode())
    _write_dir(directory, files)
    try:
        return load_effective(current.file, parts=current.parts)
    except ConfigError:
        rollback(state, current.file, parts=current.parts)
        raise


def read_pending(state_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((state_dir / PENDING).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def pending_deadline_tb(pending: dict[str, Any]) -> int:
    """The boot-time deadline of a pending apply; a new boot gives it a whole new window."""
    window = int(pending.get("window_ms", 0))
    if pending.get("boot_id") != boot_id():
        return boottime_ms() + window
    return int(pending.get("deadline_tb", 0))


def confirm(state_dir: Path) -> None:
    (state_dir / PENDING).unlink(missing_ok=True)
    shutil.rmtree(state_dir / PREVIOUS, ignore_errors=True)


def rollback(state_dir: Path, config_path: Path, *, parts: PartCatalog) -> Config | None:
    """Put the config in effect before the pending apply back; None when nothing is pending."""
    if read_pending(state_dir) is None:
        return None
    directory, previous = applied_dir(state_dir), state_dir / PREVIOUS
    shutil.rmtree(directory, ignore_errors=True)
    if previous.exists():
        previous.rename(directory)
    fsync_dir(state_dir)
    (state_dir / PENDING).unlink(missing_ok=True)
    return load_effective(config_path, parts=parts)


def reset(state_dir: Path) -> bool:
    """Drop the platform's applied config (the technician's file is in effect again)."""
    found = applied_dir(state_dir).exists()
    for name in (APPLIED, PREVIOUS, PENDING):
        target = state_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return found


def start_config(path: Path, *, parts: PartCatalog, check_files: bool = True) -> Config:
    """The config to start on: a stale applied file set aside, a failing pending apply rolled back."""
    base = config_mod.load(path, parts=parts, check_files=check_files)
    aside = set_aside_superseded(base)
    if aside is not None:
        log.warning(
            "config: %s changed after the platform's config.apply; it wins (applied one kept as %s)",
            path,
            aside,
        )
    try:
        return load_effective(path, parts=parts, check_files=check_files)
    except ConfigError as exc:
        if read_pending(base.gateway.state_dir) is None:
            raise
        log.error("config: the pending config.apply does not load (%s); rolling back", exc)
        rollback(base.gateway.state_dir, path, parts=parts)
        return load_effective(path, parts=parts, check_files=check_files)
