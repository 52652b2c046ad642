"""`gridedge platform`: what the platform signs and sends, as commands and as a library.

Each of the platform's keys has one role, and nothing here lets one stand in for
another: the *command* key signs commands (`sos.ack`, `alert.broadcast`, `fleet.set`,
`posture.set`, `config.apply`...) and config bundles; the *firmware* key signs firmware
manifests; a *rotation* of either is signed by that role's current key and by the new
key (docs/envelope-and-topics.md, Commands). A command's `cseq` is the unix time in
milliseconds unless given, so commands from several platform instances still rise.

    gridedge platform keygen --out DIR --name command
    gridedge platform command --key command.key --to GW --type fleet.set \\
        --args '{"geofence": "harbour", "mmsi": [412000001]}' --host BROKER --wait 30
    gridedge platform bundle --key command.key --gw GW --config gateway.toml \\
        [--rotate command --new-key new-command.key] --out bundle.cbor
    gridedge platform manifest --key firmware.key --image app.bin \\
        --device-class sos-button-v2 --version 1.5.0 --min-version 1.0.0 --out app.manifest
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.mqtt import MqttConnection, TlsSettings
from floor.envelope import (
    Signer,
    check_gateway_payload,
    keyring,
    load_private_key,
    private_pem,
    public_pem,
    verify,
)
from floor.errors import EnvelopeError
from floor.fsutil import write_private
from floor.messages import Incoming

PREFIX = "gridedge/v1"
ROLES = ("command", "firmware")


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """A new Ed25519 key pair: `name.key` (private, 0600) and `name.pub`."""
    key = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    priv, pub = directory / f"{name}.key", directory / f"{name}.pub"
    write_private(priv, private_pem(key))
    pub.write_bytes(public_pem(key.public_key()))
    return priv, pub


def signer_from(path: Path) -> Signer:
    return Signer(load_private_key(path.read_bytes()))


def command(
    key: Signer,
    *,
    to: str,
    type_: str,
    args: Mapping[str, Any] | None = None,
    cseq: int | None = None,
    valid_s: float = 300.0,
    now_ms: int | None = None,
) -> tuple[str, bytes]:
    """A command signed by the command key: (its id, the COSE_Sign1). `to` is a gateway
    id or `group:NAME`."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    cid = uuid.uuid4().hex
    payload = {
        "v": 1,
        "id": cid,
        "to": to,
        "cseq": now if cseq is None else cseq,
        "iat": now,
        "exp": now + int(valid_s * 1000),
        "type": type_,
        "args": dict(args or {}),
    }
    return cid, key.sign(payload)


def command_topic(to: str, prefix: str = PREFIX) -> str:
    """Where a command for `to` goes: a gateway's own topic, or its group's."""
    if to.startswith("group:"):
        return f"{prefix}/group/{to.removeprefix('group:')}/cmd"
    return f"{prefix}/{to}/cmd"


def rotation(current: Signer, new: Signer, *, gw: str, role: str) -> list[bytes]:
    """A rotation of `role`'s key to `new`: the statement signed by the current key and by
    the new one, both, as a bundle carries it."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if current.public_key == new.public_key:
        raise ValueError("the new key is the current key")
    stmt = {"v": 2, "type": "trust.rotation", "gw": gw, "role": role}
    stmt["key"] = public_pem(new.public_key).decode()
    return [current.sign(stmt), new.sign(stmt)]


def bundle(key: Signer, *, gw: str, config: str, rotations: list[bytes] | None = None) -> bytes:
    """A `config.apply` bundle signed by the command key (with any rotation statements)."""
    return key.sign({"v": 1, "gw": gw, "config": config, "rotation": rotations or None})


def manifest(
    key: Signer,
    *,
    image: bytes,
    device_class: str,
    version: str,
    min_version: str,
    valid_s: float | None = 30 * 86400.0,
) -> bytes:
    """A firmware manifest signed by the firmware key."""
    payload = {
        "v": 1,
        "device_class": device_class,
        "version": version,
        "size": len(image),
        "sha256": hashlib.sha256(image).digest(),
        "min_version": min_version,
        "not_after": None if valid_s is None else int(time.time() * 1000 + valid_s * 1000),
    }
    return key.sign(payload)


async def send(
    data: bytes,
    topic: str,
    *,
    host: str,
    port: int,
    tls: TlsSettings | None = None,
    wait_for: tuple[str, Path] | None = None,
    wait_s: float = 30.0,
    prefix: str = PREFIX,
) -> dict[str, Any] | None:
    """Publish a signed command (QoS 1); with `wait_for` (its id, the gateway's public
    key), its `cmd.result` as the gateway signed it, verified, or None after `wait_s`."""
    results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    keys = keyring(load_public_key_file(wait_for[1])) if wait_for else {}

    def on_message(msg: Incoming) -> None:
        try:
            p = check_gateway_payload(verify(msg.payload, keys).payload)
        except EnvelopeError:
            return
        for rec in p["recs"]:
            d = rec.get("d", {})
            if wait_for is not None and d.get("id") == wait_for[0]:
                results.put_nowait(dict(d))

    cid = f"gridedge-platform-{uuid.uuid4().hex[:8]}"
    async with MqttConnection(host=host, port=port, client_id=cid, tls=tls, on_message=on_message) as conn:
        if wait_for is not None:
            await conn.subscribe([f"{prefix}/+/up/cmd.result"])
        await conn.publish(topic, data)
        if wait_for is None:
            return None
        try:
            async with asyncio.timeout(wait_s):
                return await results.get()
        except TimeoutError:
            return None


def load_public_key_file(path: Path) -> Any:
    from floor.envelope import load_public_key

    return load_public_key(path.read_bytes())


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gridedge platform", description=(__doc__ or "").split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    k = sub.add_parser("keygen", help="a key pair for one role")
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--name", required=True)
    c = sub.add_parser("command", help="sign (and send) a command")
    c.add_argument("--key", type=Path, required=True, help="the command key (private)")
    c.add_argument("--to", required=True, help="a gateway id, or group:NAME")
    c.add_argument("--type", required=True)
    c.add_argument("--args", default="{}", help="a JSON object; a value @PATH is that file's bytes")
    c.add_argument("--cseq", type=int)
    c.add_argument("--valid-s", type=float, default=300.0)
    c.add_argument("--host")
    c.add_argument("--port", type=int, default=1883)
    c.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the cmd.result")
    c.add_argument("--gateway-pub", type=Path, help="the gateway's public key (to verify its result)")
    c.add_argument("--out", type=Path, help="write the signed command here instead of sending it")
    b = sub.add_parser("bundle", help="sign a config.apply bundle")
    b.add_argument("--key", type=Path, required=True, help="the command key (private)")
    b.add_argument("--gw", required=True)
    b.add_argument("--config", type=Path, required=True)
    b.add_argument("--rotate", choices=ROLES, help="move this role's key...")
    b.add_argument("--current-key", type=Path, help="...signed by its current key (private)")
    b.add_argument("--new-key", type=Path, help="...and by the new key (private)")
    b.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("manifest", help="sign a firmware manifest")
    m.add_argument("--key", type=Path, required=True, help="the firmware key (private)")
    m.add_argument("--image", type=Path, required=True)
    m.add_argument("--device-class", required=True)
    m.add_argument("--version", required=True)
    m.add_argument("--min-version", required=True)
    m.add_argument("--out", type=Path, required=True)
    return ap


def _keygen(a: argparse.Namespace) -> int:
    priv, pub = keygen(a.out, a.name)
    print(json.dumps({"key": str(priv), "pub": str(pub)}))
    return 0


def _manifest(a: argparse.Namespace) -> int:
    image = a.image.read_bytes()
    key = signer_from(a.key)
    a.out.write_bytes(
        manifest(key, image=image, device_class=a.device_class, version=a.version, min_version=a.min_version)
    )
    return 0


def _bundle(a: argparse.Namespace) -> int:
    rotations = None
    if a.rotate:
        if a.current_key is None or a.new_key is None:
            raise SystemExit("gridedge platform bundle: --rotate needs --current-key and --new-key")
        rotations = rotation(signer_from(a.current_key), signer_from(a.new_key), gw=a.gw, role=a.rotate)
    a.out.write_bytes(bundle(signer_from(a.key), gw=a.gw, config=a.config.read_text(), rotations=rotations))
    return 0


def _command(a: argparse.Namespace) -> int:
    args = json.loads(a.args)
    if not isinstance(args, dict):
        raise SystemExit("gridedge platform command: --args must be a JSON object")
    for name, value in list(args.items()):  # a file's bytes for bytes arguments: @path
        if isinstance(value, str) and value.startswith("@"):
            args[name] = Path(value[1:]).read_bytes()
    cid, data = command(signer_from(a.key), to=a.to, type_=a.type, args=args, cseq=a.cseq, valid_s=a.valid_s)
    if a.out:
        a.out.write_bytes(data)
        print(json.dumps({"id": cid}))
        return 0
    if not a.host:
        raise SystemExit("gridedge platform command: --host (the broker), or --out")
    if a.wait and not a.gateway_pub:
        raise SystemExit("gridedge platform command: --wait needs --gateway-pub to verify the result")
    wait = (cid, a.gateway_pub) if a.wait else None
    result = asyncio.run(
        send(data, command_topic(a.to), host=a.host, port=a.port, wait_for=wait, wait_s=a.wait)
    )
    print(
        json.dumps(
            {"id": cid, "result": result}, default=lambda o: o.hex() if isinstance(o, bytes) else str(o)
        )
    )
    if wait is None:
        return 0
    return 0 if result is not None and result.get("ok") else 1


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    run = {"keygen": _keygen, "manifest": _manifest, "bundle": _bundle, "command": _command}[a.what]
    return run(a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
