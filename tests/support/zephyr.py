"""The real Zephyr SMP server with MCUboot, from the pinned smpclient source package on PyPI.

`smp_server_fixtures()` fetches the sdist of the installed smpclient version (pip
download, never committed: tests/fixtures/smp-server/ is git-ignored), extracts its
`tests/fixtures/smp-server/` and checks every file used against the package's
SHA256SUMS. `ZephyrBoard` boots one fixture in qemu-system-arm with the UART on a
TCP socket and bridges it to a pty, the way a USB-serial adapter would present it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tests.support.gateway import REPO
from tests.support.pty import Pty

FIXTURES = REPO / "tests" / "fixtures" / "smp-server"
PREFIX = "tests/fixtures/smp-server/"


def _sums(directory: Path) -> dict[str, str]:
    out = {}
    for line in (directory / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            out[name.strip()] = digest
    return out


def _verify(directory: Path, names: list[str]) -> None:
    sums = _sums(directory)
    for name in names:
        want = sums.get(name)
        if want is None:
            raise RuntimeError(f"{name} is not in SHA256SUMS")
        got = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        if got != want:
            raise RuntimeError(f"{name}: SHA-256 {got} does not match SHA256SUMS {want}")


def smp_server_fixtures() -> Path:
    """tests/fixtures/smp-server/ from the smpclient sdist, verified."""
    stamp = FIXTURES / ".smpclient-version"
    wanted = version("smpclient")
    if not (stamp.exists() and stamp.read_text() == wanted):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"smpclient=={wanted}",
                    "-d",
                    d,
                ],
                check=True,
                capture_output=True,
            )
            (sdist,) = Path(d).glob("smpclient-*.tar.gz")
            shutil.rmtree(FIXTURES, ignore_errors=True)
            FIXTURES.mkdir(parents=True)
            with tarfile.open(sdist) as tar:
                for member in tar.getmembers():
                    _, _, rel = member.name.partition("/")
                    if member.isfile() and rel.startswith(PREFIX) and "/" not in rel[len(PREFIX) :]:
                        src = tar.extractfile(member)
                        assert src is not None
                        (FIXTURES / rel[len(PREFIX) :]).write_bytes(src.read())
        stamp.write_text(wanted)
    # manifest.json is a local merge in the package (see its VERSION file), so only the
    # binaries that are run or uploaded are checked, by ZephyrBoard, against SHA256SUMS.
    return FIXTURES


class ZephyrBoard:
    """One fixture (a `config` of manifest.json) in qemu, its UART bridged to a pty."""

    def __init__(self, fixtures: Path, config: str, link: Path) -> None:
        entries: list[dict[str, Any]] = json.loads((fixtures / "manifest.json").read_text())
        entry = next(e for e in entries if e["config"] == config)
        self.entry = entry
        self.hex = fixtures / entry["artifact"]
        signed = self.hex.name.replace(".merged.hex", ".hex").replace(".hex", ".signed.bin")
        self.signed = self.hex.with_name(signed)
        _verify(fixtures, [self.hex.name, self.signed.name])
        qemu = shutil.which("qemu-system-arm")
        if qemu is None:
            raise RuntimeError("qemu-system-arm is not installed; scripts/test installs it")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = shlex.split(entry["qemu_cmd"].replace("<PORT>", str(port)))
        self.proc = subprocess.Popen(argv, cwd=fixtures, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("qemu did not open its serial socket") from None
                time.sleep(0.1)
        self.sock.settimeout(None)
        self.link = link
        self.cuts = 0
        self._stop = threading.Event()
        self.pty = Pty(link)
        self._bridge()
        threading.Thread(target=self._from_board, daemon=True).start()

    def _bridge(self) -> None:
        threading.Thread(target=self._to_board, args=(self.pty.master,), daemon=True).start()

    def plug(self) -> None:
        self.pty.plug()
        self._bridge()

    def cut(self, for_s: float = 0.5) -> None:
        """Pull the USB-serial cable, and plug it back after `for_s`."""
        self.cuts += 1
        self.pty.unplug()
        threading.Timer(for_s, self.plug).start()

    def _to_board(self, fd: int) -> None:
        while not self._stop.is_set():
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(OSError):
                self.sock.sendall(data)

    def _from_board(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            if self.pty.master >= 0:
                with contextlib.suppress(OSError):
                    os.write(self.pty.master, data)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.sock.close()
        if hasattr(self, "pty"):
            self.pty.unplug()
        self.proc.kill()
        self.proc.wait()


def with_version(image: bytes, major: int, minor: int, revision: int, build: int = 0) -> bytes:
    """The fixture's MCUboot image with another version in its header, hash TLV recomputed.

    The fixture images are validated by hash only (their TLV area holds just the SHA-256,
    no signature), so a newer version of the same application is a header change and a
    new hash: what a platform would build and sign (here: hash) for a real release."""
    hdr_size = int.from_bytes(image[8:10], "little")
    img_size = int.from_bytes(image[12:16], "little")
    header = bytearray(image[:hdr_size])
    header[20:28] = bytes([major, minor]) + revision.to_bytes(2, "little") + build.to_bytes(4, "little")
    body = bytes(header) + image[hdr_size : hdr_size + img_size]
    digest = hashlib.sha256(body).digest()
    tlv_info = (0x6907).to_bytes(2, "little") + (4 + 4 + 32).to_bytes(2, "little")
    return body + tlv_info + (0x10).to_bytes(2, "little") + (32).to_bytes(2, "little") + digest
