"""Threat: the platform's command key is stolen. A signed command or config bundle is then
believed, so what a bundle can do must be bounded: no code chosen by name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.ble.transport import resolve_factory
from drivers.parts import parse_config as parse
from edge.commands import CommandError
from edge.reconfig import BundleError, open_bundle
from firmware_bridge.store import Floors
from floor.envelope import Signer, public_pem
from floor.errors import ConfigError


def test_a_config_cannot_name_code_to_run(tmp_path: Path) -> None:
    """Threat: a stolen platform command key signs a config bundle. `[ble] backend =
    "subprocess:run"` with three options once ran a shell command as the gateway."""
    marker = tmp_path / "ran"
    text = (
        '[gateway]\nid = "gw-1"\nkey = "k"\nstate_dir = "s"\n'
        f'[ble]\nbackend = "subprocess:run"\n[ble.options]\nargs = "touch {marker}"\nshell = "1"\n'
    )
    with pytest.raises(ConfigError) as err:
        parse(text, check_files=False)
    assert err.value.path == "ble.backend"
    with pytest.raises(ConfigError):
        resolve_factory("subprocess:run", {"args": f"touch {marker}"})
    assert not marker.exists()


def test_a_corrupt_security_floor_is_said_and_healed_from_its_mirror(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Restoring an old or damaged state directory must not lower the firmware floor
    silently: the mirror still holds it, the broken copy is logged and rewritten."""
    main, mirror = tmp_path / "state" / "floor.json", tmp_path / "mirror" / "floor.json"
    Floors([main, mirror]).raise_to("sos-button-v2", (1, 6, 0))
    main.write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="firmware_bridge.store"):
        floors = Floors([main, mirror])
    assert floors.get("sos-button-v2") == (1, 6, 0)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert json.loads(main.read_text()) == {"sos-button-v2": "1.6.0"}


BASE = (
    '[gateway]\nid = "gw-1"\nkey = "gateway.key"\nstate_dir = "state"\n'
    '[mqtt]\nhost = "broker.example"\nport = 8883\ntls_ca = "ca.crt"\ntls_cert = "gw.crt"\n'
    'tls_key = "gw.tls.key"\n[outbox]\nbatch_ms = 250\n'
)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('tls_ca = "ca.crt"', 'tls_ca = "attacker-ca.crt"'),  # trust the attacker's broker
        ('tls_key = "gw.tls.key"', 'tls_key = "other.key"'),
        ('key = "gateway.key"', 'key = "other.key"'),  # sign as another identity
        ("port = 8883", "port = 8883\ninsecure = true"),
        ("batch_ms = 250", 'batch_ms = 250\n[firmware]\nfloor_mirror = "/tmp/floor.json"'),
    ],
)
def test_a_bundle_cannot_move_a_trust_anchor(tmp_path: Path, old: str, new: str) -> None:
    """Who the gateway is and whom it trusts on the wire move in the technician's file
    only: no bundle moves them, whatever rotation it carries."""
    platform = Signer(Ed25519PrivateKey.generate())
    (tmp_path / "platform.pub").write_bytes(public_pem(platform.public_key))
    here = str(tmp_path / "gateway.toml")
    trust = '[trust]\ncommand_key = "platform.pub"\n'
    current = parse(BASE + trust, file=here, base=tmp_path, check_files=False)
    text = (BASE + trust).replace(old, new)
    assert text != BASE

    def bundle(config: str, rotation: list[bytes] | None = None) -> bytes:
        return platform.sign({"v": 1, "gw": "gw-1", "config": config, "rotation": rotation})

    successor = Signer(Ed25519PrivateKey.generate())
    statement = {"v": 2, "type": "trust.rotation", "gw": "gw-1", "role": "command"}
    statement["key"] = public_pem(successor.public_key).decode()
    rotation = [platform.sign(statement), successor.sign(statement)]
    for rot in (None, rotation):
        with pytest.raises(BundleError) as err:
            open_bundle(bundle(text, rot), platform.public_key, current)
        assert err.value.code == CommandError.TRUST_CHANGE_REFUSED
        assert "only the technician's file" in err.value.detail
    # the control: a harmless change passes, and so does a rotation of the command key alone
    harmless = (BASE + trust).replace("batch_ms = 250", "batch_ms = 100")
    assert open_bundle(bundle(harmless), platform.public_key, current).cfg.outbox.batch_ms == 100
    assert open_bundle(bundle(harmless, rotation), platform.public_key, current).rotated["command"]
