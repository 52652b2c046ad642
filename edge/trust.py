"""The trust anchors the config names: the platform's command and firmware keys."""

from __future__ import annotations

import contextlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from floor.config import Config
from floor.envelope import load_public_key
from floor.errors import CANNOT_LOAD, N_, ConfigError


def _load(path: Path, key: str) -> Ed25519PublicKey:
    try:
        return load_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(key, CANNOT_LOAD, file_path=path, why=exc) from None


class TrustKeys:
    """Each key read from disk once; errors name the config key."""

    def __init__(self, cfg: Config, gateway_key: Ed25519PublicKey) -> None:
        self._cfg = cfg
        self._gateway_key = gateway_key
        self._command: Ed25519PublicKey | None = None

    def command_key(self) -> Ed25519PublicKey | None:
        """The platform's command key (the firmware key is checked against it at start,
        and the command handler trusts it)."""
        path = self._cfg.trust.command_key
        if path is None:
            return None
        if self._command is None:
            key = _load(path, "trust.command_key")
            if key == self._gateway_key:
                raise ConfigError(
                    "trust.command_key", N_("must be the platform's own key, not the gateway key")
                )
            self._command = key
        return self._command

    def firmware_key(self) -> Ed25519PublicKey | None:
        """The platform's firmware-manifest key: its own, never the command or gateway key."""
        path = self._cfg.trust.firmware_key
        if path is None:
            return None
        key = _load(path, "trust.firmware_key")
        others = [self._gateway_key]
        with contextlib.suppress(ConfigError):  # a bad command key is reported where commands start
            command = self.command_key()
            if command is not None:
                others.append(command)
        if key in others:
            raise ConfigError(
                "trust.firmware_key", N_("must be its own key, not the command or the gateway key")
            )
        return key
