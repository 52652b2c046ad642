"""Threat: a hostile or broken wearable (over BLE or a cable): what it reports is data to
check, never a reason to do something unsafe."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge.reasons import FwReason
from tests.integration.test_firmware_smp import flash, image
from tests.support.smp_device import SmpDevice


@pytest.mark.parametrize("reported", ["1.6.0-rc1", "v1.6", "garbage"])
def test_a_version_that_does_not_parse_is_no_way_around_the_downgrade_check(
    reported: str, tmp_path: Path
) -> None:
    dev = SmpDevice(tmp_path / "ttySMP", running=reported)
    try:
        res, offsets = flash(dev, image("1.5.0"), "1.5.0")
    finally:
        dev.stop()
    assert not res.ok and res.reason == FwReason.ROLLBACK, res
    assert offsets == [] and dev.slots[0].version == reported  # nothing was uploaded
