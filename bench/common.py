"""Shared by the benchmarks: a table, the RESULT line, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import resource
import sys


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_mb() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}  ({machine()})")
    print("-" * (width + 24))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 24))


def result(name: str, **figures: float) -> None:
    """The one line a harness reads: `RESULT name key=value ...`."""
    parts = " ".join(f"{k}={v:.6g}" for k, v in figures.items())
    print(f"RESULT {name} {parts}")
    sys.stdout.flush()
