"""`config.apply`: signed config bundles, applied in place, rolled back when unhealthy.

A bundle is a COSE_Sign1 signed by the command key with the payload
`{"v": 1, "gw": <gateway id>, "config": <TOML text>, "rotation": <bytes or null>}`.
It is validated exactly like a config file (same loader, same errors), may not
change the gateway id, and may change `[trust]` only with a rotation statement: a
COSE_Sign1 by the *current* command key over `{"v": 1, "type": "trust.rotation",
"gw": <id>, "command_key": <PEM text>}` whose key is then written to the path the new
config names. The previous config is kept; a pending record in the state directory
makes the gateway roll back by itself if it is not healthy (connected, outbox
draining) within `rollback_after_s`, even across a crash.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import config as config_mod
from edge.config import Config
from edge.envelope import keyring, load_public_key, verify
from edge.errors import ConfigError, EnvelopeError
from edge.fsutil import write_atomic

PENDING = "config-pending.json"
DEFAULT_ROLLBACK_S = 60.0


class BundleError(Exception):
    """A bundle that must not be applied; `code` goes into cmd.result."""

    def __init__(self, code: str, detail: str = "") -> None:
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


def _signed_payload(data: bytes, trust: Ed25519PublicKey, code: str) -> Any:
    """The payload of a COSE_Sign1 by the current command key, or BundleError(code)."""
    try:
        return verify(data, keyring(trust)).payload
    except EnvelopeError as exc:
        raise BundleError(code, exc.reason.value) from None


def open_bundle(data: Any, trust: Ed25519PublicKey, current: Config) -> Bundle:
    """Verify and validate a bundle against the running config; nothing is written."""
    if not isinstance(data, bytes):
        raise BundleError("bad_args", "bundle must be bytes")
    payload = _signed_payload(data, trust, "bad_bundle")
    if not isinstance(payload, dict) or payload.get("v") != 1 or not isinstance(payload.get("config"), str):
        raise BundleError("bad_bundle", "payload")
    if payload.get("gw") != current.gateway.id:
        raise BundleError("wrong_target", "bundle is for another gateway")
    text = payload["config"]
    rotation = payload.get("rotation")
    rotation_pem: bytes | None = None
    if rotation is not None:
        rotation_pem = _rotation_key(rotation, trust, current.gateway.id)
    try:
        new = config_mod.parse(text, file=str(current.file), base=current.file.parent, check_files=False)
    except ConfigError as exc:
        raise BundleError("bad_config", str(exc)) from None
    if new.gateway.id != current.gateway.id:
        raise BundleError("bad_config", "gateway.id cannot be changed by a bundle")
    # Any change of a trust anchor (even pointing at another file already on disk,
    # such as the gateway's own public key) needs the current key's rotation statement.
    same_key = _key_bytes(new.trust.command_key) == trust.public_bytes_raw()
    trust_changed = new.trust != current.trust or not same_key
    if trust_changed and (rotation_pem is None or new.trust.command_key is None):
        raise BundleError("trust_change_refused", "[trust] changes need a rotation signed by the current key")
    return Bundle(text=text, cfg=new, rotation_key_pem=rotation_pem)


def _rotation_key(rotation: Any, trust: Ed25519PublicKey, gw: str) -> bytes:
    if not isinstance(rotation, bytes):
        raise BundleError("bad_bundle", "rotation must be a COSE_Sign1")
    stmt = _signed_payload(rotation, trust, "trust_change_refused")
    if not isinstance(stmt, dict) or stmt.get("type") != "trust.rotation" or stmt.get("gw") != gw:
        raise BundleError("trust_change_refused", "rotation statement")
    pem = stmt.get("command_key")
    if not isinstance(pem, str):
        raise BundleError("trust_change_refused", "rotation has no command_key")
    try:
        load_public_key(pem.encode())
    except ValueError:
        raise BundleError("trust_change_refused", "rotation key is not an Ed25519 public key") from None
    return pem.encode()


def apply_bundle(bundle: Bundle, current: Config, command_id: str, rollback_after_s: float) -> Config:
    """Write the new config (keeping the old one), record the pending check; return it loaded."""
    path = current.file
    previous = path.with_name(path.name + ".prev")
    write_atomic(previous, path.read_bytes())
    if bundle.rotation_key_pem is not None and bundle.cfg.trust.command_key is not None:
        write_atomic(bundle.cfg.trust.command_key, bundle.rotation_key_pem)
    pending = {"id": command_id, "previous": str(previous), "deadline": time.time() + rollback_after_s}
    write_atomic(current.gateway.state_dir / PENDING, json.dumps(pending).encode())
    write_atomic(path, bundle.text.encode())
    try:
        return config_mod.load(path)
    except ConfigError:
        rollback(current.gateway.state_dir, path)
        raise


def read_pending(state_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((state_dir / PENDING).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def confirm(state_dir: Path) -> None:
    (state_dir / PENDING).unlink(missing_ok=True)


def rollback(state_dir: Path, config_path: Path) -> Config | None:
    """Put the previous config back; None when there is nothing to roll back to."""
    pending = read_pending(state_dir)
    if pending is None:
        return None
    previous = Path(str(pending.get("previous", "")))
    if previous.is_file():
        write_atomic(config_path, previous.read_bytes())
    confirm(state_dir)
    return config_mod.load(config_path)
