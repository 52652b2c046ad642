"""Threat: the platform's command key is stolen. A signed command or config bundle is then
believed, so what a bundle can do must be bounded: no code chosen by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.ble.transport import resolve_factory
from edge.base.config import parse
from edge.base.errors import ConfigError


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
