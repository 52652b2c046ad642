"""Type=notify: the gateway tells systemd READY, pings WATCHDOG and says STOPPING; `gridedge status` works."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.gateway import GatewayProc


def test_ready_watchdog_stopping_and_status_cli(broker: Mosquitto, tmp_path: Path) -> None:
    addr = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(addr))
    sock.settimeout(0.2)
    gw = GatewayProc(
        tmp_path / "gw", port=broker.port, env={"NOTIFY_SOCKET": str(addr), "WATCHDOG_USEC": "400000"}
    )
    received: list[str] = []

    def drain(until: float, want: str) -> bool:
        while time.monotonic() < until:
            try:
                received.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
            if want in received[-1]:
                return True
        return False

    try:
        gw.start()
        assert drain(time.monotonic() + 20, "READY=1"), received
        assert drain(time.monotonic() + 5, "WATCHDOG=1"), received
        res = subprocess.run(
            [sys.executable, "-m", "tools.cli", "status", "--json", "-c", str(gw.config)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert doc["gw"] == gw.gw_id and "outbox" in doc and "link" in doc
        # for people: a table, in the language of LANG
        for lang, words in (("en_GB.UTF-8", ("Uplink", "Outbox")), ("zh_CN.UTF-8", ("上行链路", "发送队列"))):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))} | {"LANG": lang}
            table = subprocess.run(
                [sys.executable, "-m", "tools.cli", "status", "-c", str(gw.config)],
                capture_output=True,
                text=True,
                timeout=20,
                env=env,
            )
            assert table.returncode == 0 and gw.gw_id in table.stdout, table.stderr
            assert all(w in table.stdout for w in words), table.stdout
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        assert drain(time.monotonic() + 10, "STOPPING=1"), received
        assert gw.proc.wait(timeout=15) == 0  # a requested stop is a clean exit
    finally:
        gw.kill()
        sock.close()
    # without a running gateway, status says so in one line and exits 1
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "status", "-c", str(gw.config)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert res.returncode == 1 and "no running gateway" in res.stderr
