"""The wearable registry: seeded from the config, changed by device.pair/unpair, persisted."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.base.registry import BadEntry, Registry, Wearable, wearable_from

SEED = (
    Wearable(id="sos-1", kind="sos_button", worker="w-1", address="F0:00:00:00:00:01"),
    Wearable(id="cam-1", kind="body_camera", worker="w-1", irk="00" * 16),
)


def test_seeded_paired_unpaired_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    reg = Registry(path, SEED)
    assert sorted(reg.devices) == ["cam-1", "sos-1"]
    reg.pair(
        wearable_from({"id": "sos-2", "kind": "sos_button", "worker": "w-2", "address": "f0:00:00:00:00:02"})
    )
    assert reg.unpair("sos-1") and not reg.unpair("nope")
    again = Registry(path, SEED)  # a restart: the config still lists sos-1, but it was unpaired
    assert sorted(again.devices) == ["cam-1", "sos-2"]
    assert again.devices["sos-2"].address == "F0:00:00:00:00:02"
    again.pair(SEED[0])
    assert sorted(Registry(path, SEED).devices) == ["cam-1", "sos-1", "sos-2"]


def test_unreadable_file_falls_back_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text("{not json")
    assert sorted(Registry(path, SEED).devices) == ["cam-1", "sos-1"]


@pytest.mark.parametrize(
    "args",
    [
        {"id": "a/b", "kind": "sos_button", "worker": "w", "address": "F0:00:00:00:00:01"},
        {"id": "a", "kind": "toaster", "worker": "w", "address": "F0:00:00:00:00:01"},
        {"id": "a", "kind": "sos_button", "worker": "w#", "address": "F0:00:00:00:00:01"},
        {"id": "a", "kind": "sos_button", "worker": "w", "address": "F0:00:00:00:00:01", "irk": "00" * 16},
        {"id": "a", "kind": "sos_button", "worker": "w", "irk": "zz" * 16},
        "not a map",
    ],
)
def test_bad_pairings(args: object) -> None:
    with pytest.raises(BadEntry):
        wearable_from(args)
