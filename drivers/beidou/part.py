"""A BeiDou short-message terminal on a serial port: one part in two roles.

As a stream device (`[[devices]] kind = "beidou"`) it reads what the terminal hands over:
its own card's information, and at a command terminal ashore the subordinate cards'
position reports and messages, relayed as signed vessel records (`beidou.position`,
`beidou.message`, a boat's distress as `beidou.distress`), joined to MMSIs by `cards`.

As a bearer (`[beidou]`, `device` naming that terminal) it carries life-safety messages
to the platform's card when the broker has not acknowledged them: once per the card's
service interval, never faster, across restarts too (drivers/beidou/bearer.py).
"""

from __future__ import annotations

from typing import Any

from drivers.beidou.config import BeidouConfig, BeidouDevice, parse_bearer, parse_device
from drivers.beidou.parse import LEVEL_BITS
from drivers.part import Bearer, BearerHost, BearerPart, Device, DeviceHost, StreamPart
from floor.compact import SIGNATURE_BYTES
from floor.errors import N_, ConfigError, Problem

__all__ = ["PART", "BeidouConfig", "BeidouDevice", "advice", "sample_sos", "sizes"]


def build_device(cfg: BeidouDevice, host: DeviceHost) -> Device:
    from drivers.beidou.terminal import BeidouTerminal

    return BeidouTerminal(
        cfg, emit=host.emit, tracker=host.tracker, room=host.room, tap=host.tap, state_dir=host.state_dir
    )


def sample_sos(gateway: str) -> dict[str, Any]:
    """An SOS as a wearable's press makes it, with a fix, its fields at their longest
    likely values: what sizing the card's message is judged on."""
    fix = {"lat": 22.123456, "lon": 113.654321, "alt": 12.3, "sats": 11, "hdop": 0.9}
    fix |= {"utc": 1_800_000_000_000, "age_ms": 1500}
    d = {"device": "sos-worker-0042", "worker": "w-0042", "counter": 65535, "event": "long_press", "fix": fix}
    rec = {"tb": 10**9, "tu": 1_800_000_000_000, "d": d}
    return {
        "v": 1,
        "gw": gateway,
        "ep": [2**20, bytes(8)],
        "seq": 10**7,
        "kind": "sos.alarm",
        "src": d["device"],
        "prio": 0,
        "tq": "gnss",
        "recs": [rec],
    }


def sizes(gateway: str) -> tuple[int, int]:
    """(signed compact, short) bytes of a sample SOS of this gateway (the short form
    signed is 64 bytes more)."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from floor.compact import pack, short
    from floor.envelope import Signer

    payload = sample_sos(gateway)
    signed = Signer(Ed25519PrivateKey.generate()).sign_bytes(cbor2.dumps(pack(payload)))
    return len(signed), len(cbor2.dumps(short(payload)))


def advice(cfg: BeidouConfig, gateway: str) -> list[Problem]:
    """Whether the card's messages hold an SOS signed, or only in the short form."""
    if not cfg.enabled:
        return []
    signed, shortest = sizes(gateway)
    if cfg.max_bytes is None:
        return [
            Problem(
                N_(
                    "beidou: level is not set: the card's message length is read from the terminal; "
                    "an SOS is {signed} bytes signed, {short} in the short form (levels: {levels})"
                ),
                {"signed": signed, "short": shortest, "levels": _levels()},
            )
        ]
    if signed <= cfg.max_bytes:
        return []
    if shortest + SIGNATURE_BYTES <= cfg.max_bytes:
        return [
            Problem(
                N_(
                    "beidou: an SOS signed is {signed} bytes, a level-{level} card's message holds {max}: "
                    "it goes in the short form with the gateway's signature ({short} bytes)"
                ),
                {
                    "signed": signed,
                    "level": cfg.level,
                    "max": cfg.max_bytes,
                    "short": shortest + SIGNATURE_BYTES,
                },
            )
        ]
    if shortest <= cfg.max_bytes:
        return [
            Problem(
                N_(
                    "beidou: an SOS signed is {signed} bytes, a level-{level} card's message holds {max}: "
                    "it goes in the short form ({short} bytes), unsigned, vouched for only by the "
                    "card number (docs/envelope-and-topics.md)"
                ),
                {"signed": signed, "level": cfg.level, "max": cfg.max_bytes, "short": shortest},
            )
        ]
    return [
        Problem(
            N_(
                "beidou: a level-{level} card's message holds {max} bytes: not even the short form of "
                "an SOS ({short} bytes) fits; alarms cannot go by this card"
            ),
            {"level": cfg.level, "max": cfg.max_bytes, "short": shortest},
        )
    ]


def _levels() -> str:
    return ", ".join(f"{lvl}: {bits // 8} bytes" for lvl, bits in LEVEL_BITS.items())


def build_bearer(cfg: BeidouConfig, host: BearerHost) -> Bearer:
    from drivers.beidou.bearer import BeidouBearer
    from drivers.beidou.terminal import BeidouTerminal

    terminal = host.device(cfg.device)
    if not isinstance(terminal, BeidouTerminal):
        raise ConfigError(
            "beidou.device", N_("{id} is not a BeiDou terminal of [[devices]]"), id=repr(cfg.device)
        )
    return BeidouBearer(cfg, terminal, host.state_dir, host.signature)


PART = (
    StreamPart(
        name="beidou",
        config=BeidouDevice,
        parse=parse_device,
        build=build_device,
        columns=("port", "baudrate"),
        backoff=(1.0, 30.0),
    ),
    BearerPart(name="beidou", config=BeidouConfig, parse=parse_bearer, build=build_bearer, advice=advice),
)
