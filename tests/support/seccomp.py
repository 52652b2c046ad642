"""Run a command under the system call allow-list of a systemd unit file, as systemd would.

`python -m tests.support.seccomp UNIT -- CMD...` reads the unit's `SystemCallFilter=`
lines, expands their groups with `systemd-analyze syscall-filter` (the list of the
systemd on this machine), loads that allow-list with libseccomp and execs CMD. A call
outside the list kills the process with SIGSYS, as under the shipped unit without
`SystemCallErrorNumber=`: a library that starts making a new system call fails a test,
not a deployment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_EPERM = 0x00050000 | 1


@functools.cache
def group(name: str) -> frozenset[str]:
    """The system calls of one `@group`, nested groups expanded."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise RuntimeError("systemd-analyze is not installed (Debian package systemd)")
    out = subprocess.run(
        [analyze, "syscall-filter", "--no-pager", name], check=True, capture_output=True, text=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def _names(items: list[str]) -> set[str]:
    out: set[str] = set()
    for item in items:
        out |= group(item) if item.startswith("@") else {item}
    return out


def allowed(unit: Path) -> set[str]:
    """The allow-list systemd builds from a unit's SystemCallFilter= lines (systemd.exec(5))."""
    allow: set[str] | None = None
    for line in unit.read_text().splitlines():
        m = re.match(r"\s*SystemCallFilter=(.*)$", line)
        if not m:
            continue
        value = m.group(1).strip()
        deny = value.startswith("~")
        names = _names(value.lstrip("~").split())
        if allow is None:
            if deny:
                raise ValueError(f"{unit}: a deny-list first is not what this runner models")
            # systemd adds @default to any allow-list (what every program needs to start)
            allow = names | group("@default")
        elif deny:
            allow -= names
        else:
            allow |= names
    if allow is None:
        raise ValueError(f"{unit}: no SystemCallFilter=")
    return allow


def load_filter(calls: set[str], *, eperm: frozenset[str] = frozenset()) -> None:
    """Install the allow-list on this process (and what it execs); `eperm` fails, anything else is SIGSYS."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
    if not ctx:
        raise OSError("seccomp_init failed")
    rules = [(name, SCMP_ACT_ALLOW) for name in sorted(calls)]
    rules += [(name, SCMP_ACT_ERRNO_EPERM) for name in sorted(eperm - calls)]
    for name, action in rules:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not a call on this architecture (e.g. the 32-bit *64 variants)
        rc = lib.seccomp_rule_add(ctx, action, nr, 0)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add({name})")
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m tests.support.seccomp UNIT -- CMD...")
    # The unit runs the gateway as user gridedge; the tests run as root, and SQLite, only
    # when root, chowns each journal it creates to the database's owner. As any other
    # user would, it gets EPERM for that (and ignores it) instead of SIGSYS.
    eperm = group("@chown") if os.geteuid() == 0 else frozenset()
    load_filter(allowed(Path(argv[0])), eperm=eperm)
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
