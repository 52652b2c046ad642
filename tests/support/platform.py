"""The platform's side for command tests: a command key, signed commands, a hostile publisher."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from floor.envelope import Signer, load_private_key
from tests.support.gateway import write_keypair
from tools.platform import bundle as sign_bundle
from tools.platform import command as sign_command

TlsFiles = tuple[Path, Path, Path]  # CA, client certificate, client key


class Platform:
    """Holds the command key and publishes to the broker like the platform (or an attacker)."""

    def __init__(
        self, directory: Path, port: int, *, prefix: str = "gridedge/v1", tls: TlsFiles | None = None
    ) -> None:
        self.key_path, self.pub_path = write_keypair(directory, "platform-cmd")
        self.signer = Signer(load_private_key(self.key_path.read_bytes()))
        self.prefix = prefix
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"platform-{uuid.uuid4().hex[:6]}"
        )
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.cseq = 0

    def command(
        self,
        to: str,
        type_: str,
        args: dict[str, Any] | None = None,
        *,
        cseq: int | None = None,
        exp_in_s: float = 300.0,
        signer: Signer | None = None,
    ) -> tuple[str, bytes]:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        return sign_command(signer or self.signer, to=to, type_=type_, args=args, cseq=cseq, valid_s=exp_in_s)

    def send(self, gw: str, data: bytes, *, topic: str | None = None, retain: bool = False) -> None:
        info = self.client.publish(topic or f"{self.prefix}/{gw}/cmd", data, qos=1, retain=retain)
        info.wait_for_publish(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def other_signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def raw_cbor(payload: dict[str, Any]) -> bytes:
    return cbor2.dumps(payload)


def bundle(
    platform: Platform,
    gw: str,
    text: str,
    *,
    rotation: list[bytes] | None = None,
    signer: Signer | None = None,
) -> bytes:
    """A config bundle for config.apply, signed like the platform signs it."""
    return sign_bundle(signer or platform.signer, gw=gw, config=text, rotations=rotation)


class FirmwarePlatform(Platform):
    """The platform with a firmware key as well: signs manifests and publishes image chunks."""

    def __init__(
        self, directory: Path, port: int, *, prefix: str = "gridedge/v1", tls: TlsFiles | None = None
    ) -> None:
        super().__init__(directory, port, prefix=prefix, tls=tls)
        self.fw_key_path, self.fw_pub_path = write_keypair(directory, "platform-fw")
        self.fw_signer = Signer(load_private_key(self.fw_key_path.read_bytes()))

    def manifest(self, image: bytes, *, signer: Signer | None = None, **over: Any) -> bytes:
        import hashlib

        payload = {
            "v": 1,
            "device_class": "sos-button-v2",
            "version": "1.5.0",
            "size": len(image),
            "sha256": hashlib.sha256(image).digest(),
            "min_version": "1.0.0",
            "not_after": int(time.time() * 1000) + 86_400_000,
            **over,
        }
        return (signer or self.fw_signer).sign(payload)

    def chunks(
        self, gw: str, image_id: str, data: bytes, size: int, *, start: int = 0, stop: int | None = None
    ) -> int:
        """Publish chunks [start, stop) of `data` cut in `size` pieces (QoS 1); how many were sent."""
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        sent = 0
        for n in range(start, len(pieces) if stop is None else min(stop, len(pieces))):
            info = self.client.publish(f"{self.prefix}/{gw}/fw/{image_id}/{n}", pieces[n], qos=1)
            info.wait_for_publish(10)
            sent += 1
        return sent
