"""A real PostgreSQL for the platform's tests, started in a temporary directory as the
broker is (initdb, then postgres on a unix socket only), stopped after. PostgreSQL will
not run as root, so as root it runs as `nobody`, in a directory that user owns."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class Postgres:
    def __init__(self) -> None:
        initdb, postgres = pg_bin("initdb"), pg_bin("postgres")
        if initdb is None or postgres is None:
            raise RuntimeError(
                "PostgreSQL is not installed; scripts/setup installs it (apt-get install postgresql)"
            )
        # its own directory, which the server's user can reach (a test's tmp_path is root's alone)
        workdir = self.dir = Path(tempfile.mkdtemp(prefix="gridedge-pg-"))
        workdir.chmod(0o711)
        self.data = workdir / "data"
        self.socket_dir = workdir / "run"
        self.socket_dir.mkdir()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("nobody")
            own = workdir / "own"
            own.mkdir()
            for p in (own, self.socket_dir):
                os.chown(p, user.pw_uid, user.pw_gid)
            self.data = own / "data"
            self._as = ["runuser", "-u", "nobody", "--"]
        subprocess.run(
            [
                *self._as,
                initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        self.log = workdir / "postgres.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 (the server's own log, open while it runs)
        self.proc = subprocess.Popen(
            [
                *self._as,
                postgres,
                "-D",
                str(self.data),
                "-k",
                str(self.socket_dir),
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.dsn = f"host={self.socket_dir} port=5432 user=postgres dbname=postgres"
        deadline = time.monotonic() + 30
        while not (self.socket_dir / ".s.PGSQL.5432").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.stop()
