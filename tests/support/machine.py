"""A Debian 12 machine with systemd as PID 1, booted with `systemd-nspawn --boot`.

The root filesystem is debootstrapped once and cached outside git
(`GRIDEDGE_ROOTFS_CACHE`, default `/var/cache/gridedge-test`); each test module boots a
fresh copy of it. The machine shares the host's network namespace, so a broker inside
it is reachable on 127.0.0.1 and the host's test code can play platform and devices.
Commands run inside through `nsenter` into the machine's namespaces.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("GRIDEDGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a Raspberry Pi OS Lite gateway has before gridedge: systemd, D-Bus, Python 3.11,
# BlueZ (the package recommends it); plus mosquitto to play the platform's broker.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "adduser", "procps", "bluez", "mosquitto")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class MachineError(RuntimeError):
    """The machine could not be built or booted; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("GRIDEDGE_ROOTFS_CACHE", "/var/cache/gridedge-test"))


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise MachineError(f"{name} is not installed (scripts/setup installs it for the tests)")
    return path


DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
QEMU = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}


def native_arch() -> str:
    return DEBIAN_ARCH[os.uname().machine]


def ensure_binfmt(arch: str) -> None:
    """Let this kernel run `arch` binaries through qemu-user-static (binfmt_misc)."""
    if arch == native_arch():
        return
    entry = Path("/proc/sys/fs/binfmt_misc") / QEMU[arch]
    if entry.exists() and entry.read_text().startswith("enabled"):
        return
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=False)
    res = subprocess.run([tool("update-binfmts"), "--enable", QEMU[arch]], capture_output=True, text=True)
    if not (entry.exists() and entry.read_text().startswith("enabled")):
        raise MachineError(f"cannot run {arch} binaries here (binfmt_misc, qemu-user-static): {res.stderr}")


def rootfs(arch: str | None = None, packages: tuple[str, ...] = PACKAGES) -> Path:
    """The cached Debian rootfs, built on first use (about a minute; two under emulation)."""
    arch = arch or native_arch()
    ensure_binfmt(arch)
    key = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]  # a new package list, a new rootfs
    base = cache_dir() / f"{SUITE}-{arch}-{key}"
    if (base / "etc" / "os-release").is_file():
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(base.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    include = f"--include={','.join(packages)}"
    res = subprocess.run(
        [tool("debootstrap"), f"--arch={arch}", "--variant=minbase", include, SUITE, str(tmp), MIRROR],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        out = res.stdout[-2000:] + res.stderr[-2000:]
        raise MachineError(f"debootstrap {SUITE} {arch} failed ({res.returncode}): {out}")
    if "mosquitto" in packages:
        # The broker starts only once the test has configured it; nothing answers on :1883.
        subprocess.run(
            [tool("systemctl"), f"--root={tmp}", "disable", "mosquitto.service"],
            check=True,
            capture_output=True,
        )
    (tmp / "etc" / "hostname").write_text("gridedge-test\n")
    tmp.rename(base)
    return base


def nspawn(root: Path, *argv: str, private_network: bool = False, timeout: float = 300.0) -> str:
    """Run one command in a copy of a rootfs (no boot: the command is PID 1); its output."""
    cmd = [tool("systemd-nspawn"), "--quiet", f"--directory={root}", "--register=no", "--keep-unit"]
    if private_network:
        cmd.append("--private-network")
    res = subprocess.run([*cmd, "--", *argv], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise MachineError(
            f"in {root.name}, {' '.join(argv)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
        )
    return res.stdout


def copy_rootfs(base: Path, dest: Path) -> Path:
    res = subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(dest)], capture_output=True)
    if res.returncode != 0:
        raise MachineError(f"cannot copy the rootfs: {res.stderr.decode(errors='replace')}")
    return dest


def _container_init(nspawn: int) -> int | None:
    """The machine's PID 1 as the host sees it: the descendant of `nspawn` that is systemd
    in a PID namespace of its own. nspawn's first child is not it until it has unshared
    its namespaces and executed systemd; entering it earlier enters the host."""
    own = os.readlink("/proc/self/ns/pid")
    todo = [nspawn]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            theirs = pid != nspawn and os.readlink(f"/proc/{pid}/ns/pid") != own
            if theirs and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return pid
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return None


class Machine:
    """One booted copy of the rootfs; `run()` executes inside it."""

    def __init__(self, workdir: Path, *, name: str = "gridedge-test") -> None:
        self.root = workdir / "root"
        self.name = name
        self.log = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        copy_rootfs(rootfs(), self.root)

    def boot(self, timeout: float = 90.0) -> None:
        with open(self.log, "wb") as log:
            # --keep-unit/--register=no: no systemd (machined) on the host to register with
            self.proc = subprocess.Popen(
                [
                    tool("systemd-nspawn"),
                    f"--directory={self.root}",
                    f"--machine={self.name}",
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--console=pipe",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_booted(self.proc, time.monotonic() + timeout)
        except BaseException:
            self.stop()  # a machine that did not boot is not left running behind the error
            raise

    def _wait_booted(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        while not self.leader:
            if proc.poll() is not None:
                raise MachineError(f"systemd-nspawn exited with {proc.returncode}: {self.console()}")
            if time.monotonic() > deadline:
                raise MachineError(f"no systemd as PID 1 in the machine in time: {self.console()}")
            self.leader = _container_init(proc.pid) or 0
            time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise MachineError(f"systemd did not finish booting (state {state!r}): {self.console()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                res = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=left)
                state = res.stdout.strip()
            if state in ("stopping", "maintenance"):
                raise MachineError(f"systemd is {state} instead of booting: {self.console()}")
            if state not in ("running", "degraded"):
                time.sleep(0.2)  # systemd not answering on its bus yet: ask again

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120.0, user: str | None = None, input: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the machine (as root, or as `user` through runuser)."""
        if user is not None:
            argv = ("runuser", "-u", user, "--", *argv)
        cmd = [tool("nsenter"), f"--target={self.leader}", "--all", "--", "env", "-i"]
        cmd += [f"{k}={v}" for k, v in ENV.items()]
        res = subprocess.run([*cmd, *argv], capture_output=True, text=True, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise MachineError(
                f"in the machine, {' '.join(argv)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
            )
        return res

    def path(self, inside: str) -> Path:
        """A path on the machine's disk, seen from the host (not /dev, /run or /tmp: tmpfs inside)."""
        return self.root / inside.lstrip("/")

    def ids(self, user: str) -> tuple[int, int]:
        """(uid, gid) of a user inside the machine."""
        out = self.run("id", "-u", user).stdout.strip(), self.run("id", "-g", user).stdout.strip()
        return int(out[0]), int(out[1])

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM to nspawn powers the machine off cleanly (systemd's halt)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
