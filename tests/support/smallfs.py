"""Small real filesystems (tmpfs) for full and read-only state directories: a real ENOSPC,
not a simulated one."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def try_mount_tmpfs(path: Path, size: str, *, readonly: bool = False) -> str | None:
    """Mount a real tmpfs (root only); None when done, else why it cannot be done here."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "needs root to mount a tmpfs for a small, full or read-only state directory"
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        return f"cannot mount tmpfs here: {res.stderr.decode().strip()}"
    return None


def mount_tmpfs(path: Path, size: str, *, readonly: bool = False) -> None:
    """Mount a real tmpfs; skip the test with the reason when that is impossible."""
    why = try_mount_tmpfs(path, size, readonly=readonly)
    if why is not None:
        pytest.skip(why)


def fill_disk(path: Path) -> int:
    """Write `path` until its filesystem is full (ENOSPC); returns the bytes written."""
    written = 0
    chunk = b"z" * 65536
    with open(path, "ab", buffering=0) as f:  # unbuffered: nothing left over to fail at close
        try:
            while True:
                written += f.write(chunk) or 0
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
    return written


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
