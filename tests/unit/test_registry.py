"""The wearable registry: seeded from the config, changed by device.pair/unpair, persisted."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.parts import PARTS
from floor.registry import BadEntry, Registry, Wearable, wearable_from

KINDS = PARTS.wearables
KEY = "0f" * 16

SEED = (
    Wearable(id="sos-1", kind="sos_button", worker="w-1", address="F0:00:00:00:00:01", key=KEY),
    Wearable(id="cam-1", kind="body_camera", worker="w-1", irk="00" * 16),
)


def test_seeded_paired_unpaired_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    reg = Registry(path, KINDS, SEED)
    assert sorted(reg.devices) == ["cam-1", "sos-1"]
    reg.pair(
        wearable_from(
            {
                "id": "sos-2",
                "kind": "sos_button",
                "worker": "w-2",
                "address": "f0:00:00:00:00:02",
                "key": KEY,
            },
            KINDS,
        )
    )
    assert reg.unpair("sos-1") and not reg.unpair("nope")
    again = Registry(path, KINDS, SEED)  # a restart: the config still lists sos-1, but it was unpaired
    assert sorted(again.devices) == ["cam-1", "sos-2"]
    assert again.devices["sos-2"].address == "F0:00:00:00:00:02"
    again.pair(SEED[0])
    assert sorted(Registry(path, KINDS, SEED).devices) == ["cam-1", "sos-1", "sos-2"]


def test_unreadable_file_falls_back_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text("{not json")
    assert sorted(Registry(path, KINDS, SEED).devices) == ["cam-1", "sos-1"]


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
        wearable_from(args, KINDS)


def test_the_config_stays_the_truth_for_what_it_lists(tmp_path: Path) -> None:
    """A run-time pairing used to write every device into devices.json, which then
    overrode the config for good (its edits ignored, fw_class and smp_port lost)."""
    path = tmp_path / "devices.json"
    listed = Wearable(
        id="btn-fw",
        kind="sos_button",
        worker="w-1",
        address="F0:00:00:00:00:07",
        fw_class="c",
        smp_port="/dev/x",
    )
    reg = Registry(path, KINDS, (listed,))
    reg.pair(
        wearable_from(
            {
                "id": "sos-9",
                "kind": "sos_button",
                "worker": "w-9",
                "address": "F0:00:00:00:00:09",
                "key": KEY,
            },
            KINDS,
        )
    )
    edited = Wearable(
        id="btn-fw",
        kind="sos_button",
        worker="w-2",
        address="F0:00:00:00:00:07",
        fw_class="c",
        smp_port="/dev/x",
    )
    again = Registry(path, KINDS, (edited,))  # the technician reassigned the button to w-2
    assert again.devices["btn-fw"] == edited and "sos-9" in again.devices
    # a run-time pairing of a listed id layers on top, keeping what only the config says
    again.pair(
        wearable_from(
            {
                "id": "btn-fw",
                "kind": "sos_button",
                "worker": "w-3",
                "address": "F0:00:00:00:00:08",
                "key": KEY,
            },
            KINDS,
        )
    )
    third = Registry(path, KINDS, (edited,)).devices["btn-fw"]
    assert third.worker == "w-3" and third.address == "F0:00:00:00:00:08"
    assert third.fw_class == "c" and third.smp_port == "/dev/x"
