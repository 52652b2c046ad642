"""The systemd unit is accepted by systemd-analyze and asks for what the gateway does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "gridedge.service"


def systemd_analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (Debian package systemd; scripts/setup installs it)"
    return analyze


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
        "DeviceAllow=char-ttyAMA rw",  # a Pi's PL011 UARTs
        "DeviceAllow=char-ttyS rw",  # a Pi's mini UART: /dev/serial0 with Bluetooth on
        "RuntimeDirectory=gridedge",  # the status socket for group gridedge
        "ConditionPathExists=/etc/gridedge/gateway.toml",  # installed before a config exists
    ):
        assert line in text, line


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    exe = shutil.which("gridedge") or "/bin/true"
    unit = tmp_path / "gridedge.service"
    # verify checks that ExecStart exists; point it at this checkout's entry point
    unit.write_text(UNIT.read_text().replace("/usr/bin/gridedge", exe))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines() if "gridedge.service" in ln]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_exposure_stays_at_or_below_its_reviewed_level(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    unit = tmp_path / "gridedge.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/gridedge", "/bin/true"))
    res = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True
    )
    m = re.search(r"Overall exposure level for gridedge.service: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 1.7, res.stdout  # 1.9 before the unit's sandbox was tightened
