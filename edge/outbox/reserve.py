"""Disk held back for life-safety: a file of `reserve` bytes, given up a step at a time
when the disk fills, grown back when there is room again."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from edge.outbox.model import RESERVE_STEPS, Limits

log = logging.getLogger(__name__)


class DiskReserve:
    def __init__(self, path: Path, limits: Limits) -> None:
        self.file = path.with_name(path.name + ".reserve")
        self.limits = limits

    def free(self) -> int:
        """Free bytes on the state directory's filesystem (0 when it cannot tell)."""
        try:
            return shutil.disk_usage(self.file.parent).free
        except OSError:
            return 0

    def ensure(self) -> str | None:
        """Hold the whole reserve; why not, when it cannot (what part is held stays held:
        it is all alarms will have)."""
        size = self.limits.reserve
        try:
            if self.file.exists() and self.file.stat().st_size >= size:
                return None
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError as exc:
            return f"cannot hold the {size}-byte disk reserve: {exc.strerror}"
        return None

    def release(self) -> bool:
        """Give up a step of the reserve (the file shrinks); False when none is left.
        A step at a time, so that whatever keeps filling the disk cannot take it all at once."""
        try:
            size = self.file.stat().st_size
            step = max(1, self.limits.reserve // RESERVE_STEPS)
            left = size - step if size >= 2 * step else 0  # the last step takes the remainder
            if left:
                os.truncate(self.file, left)
            else:
                self.file.unlink()
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log.error("outbox: cannot release the disk reserve: %s", exc)
            return False
        log.warning("outbox: disk full; released %d bytes of the disk reserve for life-safety", size - left)
        return True
