"""The gateway under test as a real process, plus pty-pair serial devices to feed it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.gnss.sim import epoch_sentences
from edge.health import read_status
from floor.envelope import private_pem, public_pem
from floor.fsutil import write_private
from tests.support.collector import Collector
from tests.support.pty import Pty

REPO = Path(__file__).resolve().parents[2]
CORPORA = REPO.parent / "shared" / "corpora"


def write_keypair(directory: Path, name: str = "gateway") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv, pub = directory / f"{name}.key", directory / f"{name}.pub"
    write_private(priv, private_pem(key))
    pub.write_bytes(public_pem(key.public_key()))
    return priv, pub


class GatewayProc:
    """`gridedge run` in a subprocess, with its own key, state dir and config."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        gw_id: str = "gw-test-1",
        devices: str = "",
        outbox: str = "batch_ms = 50",
        mqtt_extra: str = "reconnect_min_s = 0.05\nreconnect_max_s = 0.5",
        gateway_extra: str = "",
        extra: str = "",
        env: dict[str, str] | None = None,
        launcher: tuple[str, ...] = (),
        verbose: bool = True,
    ) -> None:
        self.dir = workdir
        self.verbose = verbose  # -v (info logging); the benchmarks run as deployed, without
        self.launcher = launcher  # a command prefix the gateway runs under (e.g. a seccomp filter)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key, self.pub = write_keypair(self.dir)
        self.state = self.dir / "state"
        self.config = self.dir / "gateway.toml"
        self.gw_id = gw_id
        self.config.write_text(
            f'[gateway]\nid = "{gw_id}"\nkey = "gateway.key"\nstate_dir = "state"\n{gateway_extra}\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n{mqtt_extra}\n\n'
            f"[outbox]\n{outbox}\n\n{extra}\n{devices}\n"
        )
        self.env = env or {}
        self.log = self.dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> GatewayProc:
        inherited = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env = {**inherited, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *self.launcher,
                    sys.executable,
                    "-m",
                    "tools.cli",
                    *(["-v"] if self.verbose else []),
                    "run",
                    "-c",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        self.starts += 1
        return self

    def status(self) -> dict[str, Any]:
        return read_status(self.state / "gridedge.sock", timeout=2.0)

    def check_alive(self) -> None:
        """Raise, with the log's tail, if the gateway exited by itself."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def wait_status(self, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                doc = self.status()
                last = doc
                if pred(doc):
                    return doc
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway status condition not met in {timeout} s; last: {last}")

    def wait_device_open(self, dev: str, opened: int = 1, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_status(lambda d: d["devices"].get(dev, {}).get("opened", 0) >= opened, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def stop(self) -> int | None:
        return self.kill(signal.SIGTERM)


def gnss_device(link: Path, dev_id: str = "gnss0", *, min_interval_s: float = 0.0, extra: str = "") -> str:
    return (
        f'[[devices]]\nid = "{dev_id}"\nkind = "gnss"\nport = "{link}"\nbaudrate = 115200\n'
        f"min_interval_s = {min_interval_s}\n{extra}\n"
    )


class Feeder:
    """A simulated receiver writing one epoch every `period` seconds into a pty until stopped."""

    def __init__(self, pty: Pty, *, period: float = 0.01, start_utc: float = 1_790_000_000.0) -> None:
        from drivers.gnss.sim import walk

        self._pty = pty
        self._period = period
        self._epochs = walk(start_utc=start_utc, hz=1 / period)
        self._stop = threading.Event()
        self.written = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._pty.write(next(self._epochs))
            except OSError:
                time.sleep(self._period)  # unplugged: a real receiver keeps talking into the void
                continue
            self.written += 1
            time.sleep(self._period)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_verifier(port: int, pubkey: Path, *args: str) -> subprocess.Popen[str]:
    """`gridedge verify` as the platform would run it; its JSON lines on stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "verify", "--port", str(port), "--pubkey", str(pubkey), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def gnss_rig(
    port: int, workdir: Path, *, device_extra: str = "", **gateway_kw: Any
) -> Iterator[tuple[Pty, GatewayProc, Collector]]:
    """A pty receiver, the gateway reading it and a collector; the gateway is started and
    its receiver open; everything is stopped on the way out."""
    pty = Pty(workdir / "ttyGNSS")
    gw = GatewayProc(
        workdir / "gw", port=port, devices=gnss_device(pty.link, extra=device_extra), **gateway_kw
    )
    col = Collector(port, gw.pub).start()
    gw.start()
    try:
        gw.wait_device_open("gnss0")
        yield pty, gw, col
    finally:
        gw.stop()
        col.stop()
        pty.unplug()


def epochs(start_utc: int, n: int = 3) -> bytes:
    """n one-second navigation epochs at a fixed spot, from start_utc."""
    return b"".join(epoch_sentences(start_utc + i, 21.9, 112.8) for i in range(n))


def trust_clock(gw: GatewayProc, pty: Pty, dev_id: str = "gnss0") -> None:
    """Feed the gateway's GNSS receiver a few fixes so its clock is trusted (`tq` gnss):
    expiry of commands and manifests is then enforced."""
    gw.wait_device_open(dev_id)
    pty.write(epochs(int(time.time())))
    gw.wait_status(lambda d: d["clock"]["tq"] == "gnss")
