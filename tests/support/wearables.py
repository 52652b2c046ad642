"""Simulated wearables in their own process (drivers/ble/sim), and the gateway config to reach them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from drivers.ble.sim.control import SimClient
from tests.support.gateway import REPO


def event_key(dev_id: str) -> str:
    """The key a simulated wearable is enrolled with (docs/ble-profiles.md): its own, per device."""
    return hashlib.sha256(b"sim-key:" + dev_id.encode()).hexdigest()[:32]


def button(dev_id: str, n: int, worker: str = "w1") -> dict[str, Any]:
    return {
        "id": dev_id,
        "kind": "sos_button",
        "address": f"F0:00:00:00:{n // 256:02X}:{n % 256:02X}",
        "worker": worker,
        "key": event_key(dev_id),
    }


def camera(dev_id: str, n: int, worker: str = "w1") -> dict[str, Any]:
    return {
        "id": dev_id,
        "kind": "body_camera",
        "address": f"F1:00:00:00:{n // 256:02X}:{n % 256:02X}",
        "worker": worker,
    }


def tag(dev_id: str, n: int, worker: str = "w1", interval_s: int = 60) -> dict[str, Any]:
    """A man-down tag that checks in every `interval_s`."""
    return {
        "id": dev_id,
        "kind": "man_down",
        "address": f"F2:00:00:00:{n // 256:02X}:{n % 256:02X}",
        "worker": worker,
        "interval_s": interval_s,
        "key": event_key(dev_id),
    }


class SimProc:
    """`python -m drivers.ble.sim`: the wearables outlive any gateway, as real ones do."""

    def __init__(self, workdir: Path, wearables: list[dict[str, Any]]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.spec = workdir / "wearables.json"
        self.spec.write_text(json.dumps(wearables))
        self.log = workdir / "sim.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "drivers.ble.sim", "--wearables", str(self.spec)],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r} {self.log.read_text()[-2000:]}")
        fields = dict(kv.split("=") for kv in line.split()[1:])
        self.hci_port = int(fields["hci"])
        self.client = SimClient(int(fields["control"]))

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        return self.client.call(op, **args)

    def ble_config(self, extra: str = "") -> str:
        return (
            '[ble]\nbackend = "sim"\nprobe_s = 1.0\nprobe_timeout_s = 1.0\n'
            f"connect_timeout_s = 5.0\nreconnect_max_s = 1.0\nunknown_report_s = 5.0\n{extra}\n"
            f'[ble.options]\nhci = "tcp-client:127.0.0.1:{self.hci_port}"\n'
        )

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.client.close()
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def devices_toml(wearables: list[dict[str, Any]]) -> str:
    out = []
    for w in wearables:
        if w.get("stranger"):
            continue
        where = f'irk = "{w["irk"]}"' if w.get("irk") else f'address = "{w["address"]}"'
        if w.get("fw_class"):
            where += f'\nfw_class = "{w["fw_class"]}"'
        if w.get("key"):
            where += f'\nkey = "{w["key"]}"'
        elif w.get("insecure"):
            where += "\ninsecure = true"
        out.append(
            f'[[devices]]\nid = "{w["id"]}"\nkind = "{w["kind"]}"\nworker = "{w["worker"]}"\n{where}\n'
        )
    return "\n".join(out)
