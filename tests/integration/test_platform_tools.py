"""`gridedge platform`, what the platform signs and sends, against a real gateway and a
real broker: a command to a gateway and to its group, verified and run, its result
waited for and verified with the gateway's key; a config bundle that rotates the command
key, applied, after which the new key commands and the old one no longer does; a
firmware manifest the gateway's own checker takes. Each key keeps its role."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.manifest import check as manifest_check
from floor.envelope import load_public_key
from tests.support.broker import Mosquitto
from tests.support.gateway import REPO, GatewayProc
from tools import platform

GW = "gw-plat-1"


def run(*args: str | Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "platform", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode in (0, 1), res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1])) if res.stdout.strip() else {}


@pytest.mark.slow
def test_commands_and_a_key_rotation_signed_by_the_tool(broker: Mosquitto, tmp_path: Path) -> None:
    keys = tmp_path / "platform-keys"
    old = run("keygen", "--out", keys, "--name", "command")
    new = run("keygen", "--out", keys, "--name", "command-next")
    gw = GatewayProc(
        tmp_path / "gw",
        port=broker.port,
        gw_id=GW,
        gateway_extra='groups = ["taishan"]',
        extra=f'[trust]\ncommand_key = "{old["pub"]}"\n',
    )
    port = str(broker.port)
    send = ("--host", "127.0.0.1", "--port", port, "--wait", "20", "--gateway-pub", gw.pub)
    try:
        gw.start()
        gw.wait_status(lambda d: d["link"]["state"] == "up", 30)
        done = run("command", "--key", old["key"], "--to", GW, "--type", "diag.snapshot", *send)
        assert done["result"]["ok"] is True, done
        group = run(
            "command", "--key", old["key"], "--to", "group:taishan", "--type", "gateway.rebirth", *send
        )
        assert group["result"]["ok"] is True, group
        # the command key moves: the bundle's rotation is signed by the old key and the new one
        bundle = tmp_path / "bundle.cbor"
        run(
            "bundle", "--key", old["key"], "--gw", GW, "--config", gw.config,
            "--rotate", "command", "--current-key", old["key"], "--new-key", new["key"], "--out", bundle,
        )  # fmt: skip
        applied = run(
            "command", "--key", old["key"], "--to", GW, "--type", "config.apply",
            "--args", json.dumps({"bundle": f"@{bundle}", "rollback_after_s": 30}), *send,
        )  # fmt: skip
        assert applied["result"]["ok"] is True and applied["result"]["applied"] is True, applied
        gw.wait_status(lambda d: d["link"]["state"] == "up" and d["epoch"] >= 2, 30)
        by_new = run("command", "--key", new["key"], "--to", GW, "--type", "diag.snapshot", *send)
        assert by_new["result"]["ok"] is True, by_new
        quick = (*send[:4], "--wait", "5", *send[6:])
        by_old = run("command", "--key", old["key"], "--to", GW, "--type", "diag.snapshot", *quick)
        assert not (by_old.get("result") or {}).get("ok"), by_old  # the old key commands no more
    finally:
        gw.kill()


def test_a_manifest_from_the_tool_is_what_the_gateway_checks(tmp_path: Path) -> None:
    fw = platform.keygen(tmp_path, "firmware")
    image = bytes(range(256)) * 40
    (tmp_path / "app.bin").write_bytes(image)
    run(
        "manifest", "--key", fw[0], "--image", tmp_path / "app.bin", "--device-class", "sos-button-v2",
        "--version", "1.5.0", "--min-version", "1.0.0", "--out", tmp_path / "app.manifest",
    )  # fmt: skip
    got = manifest_check(
        (tmp_path / "app.manifest").read_bytes(),
        firmware_key=load_public_key(fw[1].read_bytes()),
        device_class="sos-button-v2",
        running=(1, 4, 2),
        floor=(1, 0, 0),
        now_ms=None,
        max_size=1 << 20,
    )
    assert got.size == len(image)


def test_a_rotation_cannot_be_made_of_one_key_or_for_another_role() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from floor.envelope import Signer

    a = Signer(Ed25519PrivateKey.generate())
    with pytest.raises(ValueError):
        platform.rotation(a, a, gw=GW, role="command")
    with pytest.raises(ValueError):
        platform.rotation(a, Signer(Ed25519PrivateKey.generate()), gw=GW, role="gateway")
