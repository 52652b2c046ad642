"""The Debian packages, built once for the deployment tests (both architectures)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import REPO

VERSION = "0.1.0-1"
FIGURES: dict[str, str] = {}  # measured along the way, printed at the end (pytest -s)


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    if os.environ.get("GRIDEDGE_SKIP_DEPLOY") == "1":
        pytest.skip("GRIDEDGE_SKIP_DEPLOY=1: the deployment tests were asked to skip")
    work = tmp_path_factory.mktemp("debs")
    started = time.monotonic()
    res = subprocess.run(
        [str(REPO / "scripts" / "package"), "arm64", "amd64"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    FIGURES["package build (both archs)"] = f"{time.monotonic() - started:.0f} s"
    out = {}
    for arch in ("arm64", "amd64"):
        deb = REPO / "dist" / f"gridedge_{VERSION}_{arch}.deb"
        assert deb.is_file(), res.stdout
        out[arch] = Path(shutil.copy(deb, work / deb.name))
        FIGURES[f"package size {arch}"] = f"{deb.stat().st_size / 1e6:.1f} MB"
    yield out
    print("\ndeployment figures: " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items()))
