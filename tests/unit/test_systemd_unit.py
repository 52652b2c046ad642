"""The systemd unit is accepted by systemd-analyze and asks for what the gateway does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "gridedge.service"


def test_unit_declares_notify_watchdog_and_hardening() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=gridedge",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
    ):
        assert line in text, line


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    exe = shutil.which("gridedge") or "/bin/true"
    unit = tmp_path / "gridedge.service"
    # verify checks that ExecStart exists; point it at this checkout's entry point
    unit.write_text(UNIT.read_text().replace("/opt/gridedge/.venv/bin/gridedge", exe))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines() if "gridedge.service" in ln]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr
