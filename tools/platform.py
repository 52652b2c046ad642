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
    gridedge platform firmware --key command.key --to GW --manifest app.manifest --image app.bin \\
        --image-id app-150 --devices btn-1,btn-2 --host BROKER --gateway-pub gw.pub
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


WINDOW_BYTES = 4 << 20  # chunks sent beyond what the gateway last said it holds (it holds 8 MiB)
IN_FLIGHT = 32  # chunk publishes awaiting their PUBACK at once
STALL_S = 15.0  # all sent and nothing heard for this long: resend from where the gateway stands


@dataclass
class _Push:
    """Where a firmware push stands, as the gateway's reports move it."""

    gw: str
    image_id: str
    image: bytes
    chunk_size: int
    cid: str
    keys: Mapping[bytes, Any]
    prefix: str = PREFIX
    report: Callable[[str, Mapping[str, Any]], None] | None = None
    reply: dict[str, Any] = field(default_factory=dict)
    next_chunk: int = 0  # the next chunk to publish
    held: int = 0  # chunks the gateway said it holds (its next_chunk)
    resent: int = 0
    heard_at: float = 0.0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    restarted: bool = False  # the gateway was born again: its next report is where to resume

    @property
    def chunks(self) -> int:
        return -(-len(self.image) // self.chunk_size)

    def on_message(self, msg: Incoming) -> None:
        try:
            p = check_gateway_payload(verify(msg.payload, self.keys).payload)
        except EnvelopeError:
            return  # not the gateway's: nothing it says moves the push
        if p["kind"] == "gateway.status":
            # a new birth (not the retained one): it restarted, and says next where it stands
            online = any(rec["d"].get("state") == "online" for rec in p["recs"])
            self.restarted = self.restarted or (online and not msg.retain)
            return
        for rec in p["recs"]:
            d, kind = rec["d"], p["kind"]
            if kind == "cmd.result" and d.get("id") == self.cid:
                self.reply.update(d)
            elif kind == "fw.progress" and d.get("image_id") == self.image_id:
                self._progress(d)
            elif kind == "fw.result" and d.get("image_id") == self.image_id:
                self.results[str(d.get("device"))] = dict(d)
            else:
                continue
            if self.report is not None:
                self.report(kind, d)
            self.changed.set()

    def _progress(self, d: Mapping[str, Any]) -> None:
        self.heard_at = asyncio.get_running_loop().time()
        if d.get("phase") != "download" or not isinstance(d.get("next_chunk"), int):
            return
        self.held = d["next_chunk"]  # the latest word (lower after a restart that lost chunks)
        if ("error" in d or self.restarted) and d["next_chunk"] < self.next_chunk:  # from there again
            self.restarted = False
            self.resent += self.next_chunk - d["next_chunk"]
            self.next_chunk = d["next_chunk"]

    async def heard(self) -> None:
        """Until the gateway says something, or a second passes."""
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.changed.wait()

    async def send_some(self, conn: MqttConnection) -> bool:
        """Publish the chunks the window allows (IN_FLIGHT at a time); whether any were."""
        window = max(1, WINDOW_BYTES // self.chunk_size)
        acks: list[asyncio.Future[None]] = []
        while self.next_chunk < min(self.chunks, self.held + window) and len(acks) < IN_FLIGHT:
            n, size = self.next_chunk, self.chunk_size
            topic = f"{self.prefix}/{self.gw}/fw/{self.image_id}/{n}"
            acks.append(conn.publish_nowait(topic, self.image[n * size : (n + 1) * size]))
            self.next_chunk += 1
        await asyncio.gather(*acks)
        return bool(acks)

    def stalled(self) -> None:
        """All sent and the gateway quiet for STALL_S (a restart, lost chunks): again from
        what it last said it holds."""
        now = asyncio.get_running_loop().time()
        if self.next_chunk >= self.chunks and now - self.heard_at > STALL_S:
            self.resent += self.next_chunk - self.held
            self.next_chunk, self.heard_at = self.held, now


async def push_firmware(
    key: Signer,
    *,
    gw: str,
    manifest_bytes: bytes,
    image: bytes,
    image_id: str,
    devices: list[str],
    gateway_pub: Path,
    host: str,
    port: int,
    chunk_size: int = 4096,
    tls: TlsSettings | None = None,
    timeout_s: float = 900.0,
    prefix: str = PREFIX,
    report: Callable[[str, Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """A whole firmware update of `devices` on gateway `gw`: the `firmware.update` command
    (signed by the command key; the manifest by the firmware key), then the image's
    chunks from where the gateway says it stands, never more than WINDOW_BYTES beyond
    what it holds, again from its `next_chunk` when it reports a gap or goes quiet (a
    restart); until a `fw.result` for every accepted device, each verified as the
    gateway's. Returns the command's result, the results by device and the chunks resent."""
    cid, data = command(
        key, to=gw, type_="firmware.update",
        args={"manifest": manifest_bytes, "image_id": image_id, "devices": devices, "chunk_size": chunk_size},
    )  # fmt: skip
    keys = keyring(load_public_key_file(gateway_pub))
    push = _Push(gw, image_id, image, chunk_size, cid, keys, prefix, report)
    client_id = f"gridedge-platform-{uuid.uuid4().hex[:8]}"
    async with (
        asyncio.timeout(timeout_s),
        MqttConnection(
            host=host, port=port, client_id=client_id, tls=tls, on_message=push.on_message
        ) as conn,
    ):
        await conn.subscribe([f"{prefix}/{gw}/up/#", f"{prefix}/{gw}/status"])
        await conn.publish(command_topic(gw, prefix), data)
        while not push.reply:
            await push.heard()
        accepted = set(push.reply.get("accepted") or [])
        if push.reply.get("ok") and accepted:
            push.next_chunk = push.held = int(push.reply.get("next_chunk") or 0)
            push.heard_at = asyncio.get_running_loop().time()
            while not accepted <= set(push.results):
                if not await push.send_some(conn):
                    await push.heard()
                    push.stalled()
    return {"id": cid, "result": push.reply, "results": push.results, "resent": push.resent}


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
    f = sub.add_parser("firmware", help="update devices' firmware through a gateway, chunks and all")
    f.add_argument("--key", type=Path, required=True, help="the command key (private)")
    f.add_argument("--to", required=True, help="the gateway id")
    f.add_argument("--manifest", type=Path, required=True, help="signed by the firmware key (see manifest)")
    f.add_argument("--image", type=Path, required=True)
    f.add_argument("--image-id", required=True)
    f.add_argument("--devices", required=True, help="device ids, comma separated")
    f.add_argument("--chunk-size", type=int, default=4096)
    f.add_argument("--host", required=True)
    f.add_argument("--port", type=int, default=1883)
    f.add_argument("--gateway-pub", type=Path, required=True, help="the gateway's public key")
    f.add_argument("--timeout", type=float, default=900.0)
    return ap


def _firmware(a: argparse.Namespace) -> int:
    def report(kind: str, d: Mapping[str, Any]) -> None:  # progress as it comes, for the person waiting
        print(json.dumps({"kind": kind} | dict(d), default=_hexed), file=sys.stderr, flush=True)

    try:
        out = asyncio.run(
            push_firmware(
                signer_from(a.key), gw=a.to, manifest_bytes=a.manifest.read_bytes(),
                image=a.image.read_bytes(), image_id=a.image_id, gateway_pub=a.gateway_pub,
                devices=[d for d in a.devices.split(",") if d], host=a.host, port=a.port,
                chunk_size=a.chunk_size, timeout_s=a.timeout, report=report,
            )
        )  # fmt: skip
    except TimeoutError:
        print(json.dumps({"ok": False, "error": "timeout", "after_s": a.timeout}))
        return 1
    print(json.dumps(out, default=_hexed))
    results = out["results"]
    return 0 if results and all(r.get("ok") for r in results.values()) else 1


def _hexed(o: object) -> object:
    return o.hex() if isinstance(o, bytes) else str(o)


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
    print(json.dumps({"id": cid, "result": result}, default=_hexed))
    if wait is None:
        return 0
    return 0 if result is not None and result.get("ok") else 1


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    run = {
        "keygen": _keygen,
        "manifest": _manifest,
        "bundle": _bundle,
        "command": _command,
        "firmware": _firmware,
    }
    return run[a.what](a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
