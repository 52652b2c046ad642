"""Threat: the platform's command key is stolen. A signed command or config bundle is then
believed, so what a bundle can do must be bounded: no code chosen by name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from drivers.ble.transport import resolve_factory
from edge.base.config import parse
from edge.base.errors import ConfigError
from firmware_bridge.store import Floors


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
