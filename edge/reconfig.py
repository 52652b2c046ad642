"""`config.apply`: signed config bundles, applied in place, rolled back when unhealthy.

A bundle is a COSE_Sign1 signed by the command key with the payload
`{"v": 1, "gw": <gateway id>, "config": <TOML text>, "rotation": <bytes or null>}`.
It is validated exactly like a config file (same loader, same errors), may not
change the gateway id or the state directory, nor the gateway's own anchors (its key,
the TLS files, `insecure`, the firmware floor's mirror: the technician's file only),
and may move a platform key only by a rotation: `rotation` is a list of COSE_Sign1
statements `{"v": 2, "type": "trust.rotation", "gw": <id>, "role": "command" or
"firmware", "key": <PEM text>}`, each role's statement signed twice, by that role's
*current* key and by the new key. A role's key is then kept with the applied config
(`command_key.pub`, `firmware_key.pub`) and used instead of the one the config names.
No key holds two roles (command, firmware, the gateway's own); a bundle changes no
role's key that its statements do not cover. The technician's file is never
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
from floor.envelope import keyring, load_private_key, load_public_key, verify
from floor.errors import N_, ConfigError, EnvelopeError
from floor.fsutil import fsync_dir, write_atomic

log = logging.getLogger(__name__)

PENDING = "config-pending.json"
DEFAULT_ROLLBACK_S = 60.0


# What a bundle may never change: who the gateway is, whom it trusts on the wire, and
# where its firmware floor is kept (the technician's file only).
ANCHORS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("gateway.key", lambda c: c.gateway.key),
    ("mqtt.tls_ca", lambda c: c.mqtt.tls_ca),
    ("mqtt.tls_cert", lambda c: c.mqtt.tls_cert),
    ("mqtt.tls_key", lambda c: c.mqtt.tls_key),
    ("mqtt.insecure", lambda c: c.mqtt.insecure),
    ("firmware.floor_mirror", lambda c: c.firmware.floor_mirror),
    ("gateway.status_socket", lambda c: c.gateway.status_socket),
)
# Every file a config names; one a bundle changes may not lie in the state directory
# (the outbox, the replay state and the applied config are there).
PATHS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("trust.command_key", lambda c: c.trust.command_key),
    ("trust.firmware_key", lambda c: c.trust.firmware_key),
    ("web.token_file", lambda c: c.web.token_file),
    *(anchor for anchor in ANCHORS if anchor[0] != "mqtt.insecure"),
)
ROLES = ("command", "firmware")  # the platform's keys a rotation may move
ROTATION_VERSION = 2


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
    rotated: dict[str, bytes]  # role -> its new key (PEM), for each role the bundle rotates


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
    now = _role_keys(current, trust)
    rotated = _rotations(payload.get("rotation"), now, current.gateway.id)
    new = _parsed(text, current)
    after = dict(now)
    for role in ROLES:
        if role in rotated:
            after[role] = _raw(rotated[role])
            continue
        kept = _applied_key(current, role)  # an earlier rotation holds until rotated again
        wanted = now[role] if kept is not None else _key_bytes(_trust_path(new, role))
        if wanted != now[role]:
            why = f"trust.{role}_key changed: that needs a rotation by the current {role} key and the new one"
            raise BundleError(CommandError.TRUST_CHANGE_REFUSED, why)
    _distinct(after, _gateway_key(current))
    return Bundle(text=text, cfg=new, rotated=rotated)


def _parsed(text: str, current: Config) -> Config:
    """The bundle's config, parsed as the technician's file is, and held to what a bundle
    may not change: who the gateway is, where its state is, its own anchors, and any file
    it names pointed into the state directory."""
    try:
        new = config_mod.parse(
            text,
            parts=current.parts,
            file=str(current.file),
            base=current.file.resolve().parent,
            check_files=False,
        )
    except ConfigError as exc:
        raise BundleError(CommandError.BAD_CONFIG, str(exc)) from None
    if new.gateway.id != current.gateway.id:
        raise BundleError(CommandError.BAD_CONFIG, "gateway.id cannot be changed by a bundle")
    if new.gateway.state_dir != current.gateway.state_dir:
        # the applied config, the outbox and the replay state live there
        raise BundleError(CommandError.BAD_CONFIG, "gateway.state_dir cannot be changed by a bundle")
    if inside := [name for name, get in PATHS if get(new) != get(current) and _within(get(new), current)]:
        why = f"{', '.join(inside)}: a bundle may not point into the state directory"
        raise BundleError(CommandError.BAD_CONFIG, why)
    if moved := [name for name, get in ANCHORS if get(new) != get(current)]:
        why = f"{', '.join(moved)}: only the technician's file may change it"
        raise BundleError(CommandError.TRUST_CHANGE_REFUSED, why)
    return new


def _within(path: object, cfg: Config) -> bool:
    """Whether `path` lies in `cfg`'s state directory (symlinks followed)."""
    if not isinstance(path, Path):
        return False
    return path.resolve().is_relative_to(cfg.gateway.state_dir.resolve())


def _trust_path(cfg: Config, role: str) -> Path | None:
    return cfg.trust.command_key if role == "command" else cfg.trust.firmware_key


def _applied_key(cfg: Config, role: str) -> Path | None:
    """The key file of `role` an earlier rotation put in the applied directory, if it is
    the one in effect."""
    path = _trust_path(cfg, role)
    if path is not None and path.parent == applied_dir(cfg.gateway.state_dir):
        return path
    return None


def _role_keys(cfg: Config, command: Ed25519PublicKey) -> dict[str, bytes | None]:
    """Each role's key in effect now (raw bytes; None: that role has no key)."""
    return {"command": command.public_bytes_raw(), "firmware": _key_bytes(cfg.trust.firmware_key)}


def _gateway_key(cfg: Config) -> bytes | None:
    try:
        return load_private_key(cfg.gateway.key.read_bytes()).public_key().public_bytes_raw()
    except (OSError, ValueError):
        return None


def _raw(pem: bytes) -> bytes:
    return load_public_key(pem).public_bytes_raw()


def _distinct(keys: dict[str, bytes | None], gateway: bytes | None) -> None:
    """No key holds two roles: the command key, the firmware key and the gateway's own."""
    held = [(role, k) for role, k in keys.items() if k is not None]
    if gateway is not None:
        held.append(("gateway", gateway))
    for i, (a, ka) in enumerate(held):
        for b, kb in held[i + 1 :]:
            if ka == kb:
                why = f"the {a} key and the {b} key would be the same key: no key holds two roles"
                raise BundleError(CommandError.TRUST_CHANGE_REFUSED, why)


def _rotations(raw: Any, now: dict[str, bytes | None], gw: str) -> dict[str, bytes]:
    """Each role a rotation moves, and its new key (PEM): a statement for that role
    signed by the role's current key, and the same statement signed by the new key."""
    if raw is None:
        return {}
    if not isinstance(raw, list) or not all(isinstance(x, bytes) for x in raw) or len(raw) > 2 * len(ROLES):
        raise BundleError(
            CommandError.TRUST_CHANGE_REFUSED,
            "rotation: a list of statements, each signed by the role's current key and by the new key",
        )
    by_current: dict[str, dict[str, Any]] = {}  # role -> its statement, signed by its current key
    for data in raw:
        for role, key in now.items():
            stmt = _verified(data, key)
            if stmt is not None and stmt.get("role") == role:
                by_current[role] = _statement(stmt, gw)
    out: dict[str, bytes] = {}
    for role, stmt in by_current.items():
        pem = stmt["key"].encode()
        if not any(_verified(d, load_public_key(pem).public_bytes_raw()) == stmt for d in raw):
            why = f"the {role} rotation must be signed by the current {role} key and by the new key"
            raise BundleError(CommandError.TRUST_CHANGE_REFUSED, why)
        out[role] = pem
    if not out:
        why = "rotation: no statement signed by a role's current key (and by the new key)"
        raise BundleError(CommandError.TRUST_CHANGE_REFUSED, why)
    return out


def _verified(data: bytes, key: bytes | None) -> dict[str, Any] | None:
    """The payload of `data` when `key` (raw) signed it, else None."""
    if key is None:
        return None
    try:
        payload = verify(data, keyring(Ed25519PublicKey.from_public_bytes(key))).payload
    except EnvelopeError:
        return None
    return payload if isinstance(payload, dict) else None


def _statement(stmt: dict[str, Any], gw: str) -> dict[str, Any]:
    """A verified rotation statement, checked."""
    if (
        stmt.get("v") != ROTATION_VERSION
        or stmt.get("type") != "trust.rotation"
        or stmt.get("gw") != gw
        or stmt.get("role") not in ROLES
        or not isinstance(stmt.get("key"), str)
    ):
        raise BundleError(CommandError.TRUST_CHANGE_REFUSED, "rotation statement")
    try:
        load_public_key(stmt["key"].encode())
    except ValueError:
        raise BundleError(
            CommandError.TRUST_CHANGE_REFUSED, "rotation key is not an Ed25519 public key"
        ) from None
    return stmt


# The applied config lives in the state directory, which the unit lets the gateway
# write (ProtectSystem=strict keeps /etc/gridedge read-only): `applied/gateway.toml`,
# `applied/origin.json` (the technician's file it was applied over, by hash) and, after
# a rotation, `applied/command_key.pub`. It wins over the technician's file until that
# file changes (the technician's edit is newer) or `gridedge config reset` removes it.
APPLIED = "applied"
PREVIOUS = "applied.prev"
ORIGIN = "origin.json"
ROTATED_KEYS = {"command": "command_key.pub", "firmware": "firmware_key.pub"}


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
    if (rotated := directory / ROTATED_KEYS["command"]).is_file():
        cfg = replace(cfg, trust=replace(cfg.trust, command_key=rotated))
    if (rotated := directory / ROTATED_KEYS["firmware"]).is_file():
        cfg = replace(cfg, trust=replace(cfg.trust, firmware_key=rotated))
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
    for role, name in ROTATED_KEYS.items():
        if role in bundle.rotated:
            files[name] = bundle.rotated[role]
        elif (previous / name).is_file():
            files[name] = (previous / name).read_bytes()  # a rotation holds until rotated again
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
