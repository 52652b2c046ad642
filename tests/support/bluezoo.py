"""BlueZoo: a user-space org.bluez (PyPI `bluezoo`) on a private system bus (Debian `dbus-daemon`).

Lets the tests drive bleak's real BlueZ backend, the gateway's production path, with
no Bluetooth hardware or kernel support. Each adapter is a radio; an adapter that
registers an advertisement and a GATT application is a peripheral the others discover.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.gateway import REPO

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


def dbus_daemon() -> str | None:
    return shutil.which("dbus-daemon") or (
        "/usr/bin/dbus-daemon" if os.path.exists("/usr/bin/dbus-daemon") else None
    )


class BlueZoo:
    """dbus-daemon + bluezoo with `adapters` radios (hci0, hci1, ...)."""

    def __init__(self, workdir: Path, adapters: int = 2) -> None:
        binary = dbus_daemon()
        if binary is None:
            raise RuntimeError(
                "dbus-daemon is not installed; scripts/setup installs it (apt-get install dbus-daemon)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        socket = workdir / "system_bus"
        conf = workdir / "bus.conf"
        conf.write_text(BUS_CONF.format(socket=socket))
        self.address = f"unix:path={socket}"
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = workdir / "bluezoo.log"
        self.procs.append(
            subprocess.Popen([binary, "--config-file", str(conf), "--nofork"], stderr=subprocess.DEVNULL)
        )
        deadline = time.monotonic() + 10
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        bluezoo = Path(sys.executable).parent / "bluezoo"
        args = [str(bluezoo), "--auto-enable", "--scan-interval", "1"]
        for i in range(adapters):
            args += ["-a", f"00:AA:01:00:00:{i + 1:02X}"]
        with open(self.log, "wb") as log:
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        deadline = time.monotonic() + 15
        while (
            b"Adding adapter" not in self.log.read_bytes()
            or self.log.read_bytes().count(b"Adding adapter") < adapters
        ):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"bluezoo did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def adapter_address(self, i: int) -> str:
        return f"00:AA:01:00:00:{i + 1:02X}"

    def stop(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(OSError):
                p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
            if p.poll() is None:
                p.kill()
                p.wait()


class BluezButton:
    """tests/support/bluez_button.py in a subprocess on one BlueZoo adapter."""

    def __init__(self, zoo: BlueZoo, adapter: str = "hci1", key: str | None = None) -> None:
        self.key = key
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.bluez_button",
                "--adapter",
                adapter,
                *(["--key", key] if key else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=zoo.env,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        if self.readline(20) != "READY":
            raise RuntimeError(f"BlueZ button did not start: {self.lines}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._queue.put(raw.decode().strip())
        self._queue.put("")

    def readline(self, timeout: float = 15.0) -> str:
        line = self._queue.get(timeout=timeout)
        self.lines.append(line)
        return line

    def press(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"press\n")
        self.proc.stdin.flush()
        while not (line := self.readline()).startswith("PRESSED"):
            pass
        return int(line.split()[1])

    def wait_feedback(self, counter: int, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.01, deadline - time.monotonic()))
            if not line:
                raise RuntimeError(f"BlueZ button ended: {self.lines}")
            if line.startswith("FEEDBACK") and line.endswith(f" {counter}"):
                return line.split()[1]

    def stop(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
