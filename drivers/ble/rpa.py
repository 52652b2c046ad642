"""Resolvable private addresses (Bluetooth Core Spec Vol 6 Part B 1.3.2.2, Vol 3 Part H 2.2.2).

A wearable that protects its wearer's privacy changes its address every few minutes;
the gateway recognises it with the Identity Resolving Key (IRK) it was paired with:
the address is `prand || hash`, where `hash = ah(irk, prand)` and the two top bits of
`prand` are 0b01. Sans-IO: addresses and keys in, a yes/no out.

IRKs are written as 32 hex digits, most significant byte first, as in the Core
Specification's sample data; addresses as `AA:BB:CC:DD:EE:FF`, most significant
byte first, as bleak and BlueZ print them.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def ah(irk: bytes, prand: bytes) -> bytes:
    """The random address hash function: e(irk, 0^104 || prand), lowest 24 bits (big-endian)."""
    if len(irk) != 16 or len(prand) != 3:
        raise ValueError("ah needs a 16-byte IRK and a 3-byte prand")
    enc = Cipher(algorithms.AES(irk), modes.ECB()).encryptor()
    return (enc.update(bytes(13) + prand) + enc.finalize())[-3:]


def address_bytes(address: str) -> bytes | None:
    """`AA:BB:CC:DD:EE:FF` to 6 bytes, most significant first; None if it is not one."""
    parts = address.split(":")
    if len(parts) != 6 or any(len(p) != 2 for p in parts):
        return None
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        return None


def is_resolvable(address: str) -> bool:
    raw = address_bytes(address)
    return raw is not None and raw[0] >> 6 == 0b01


def resolves(irk: bytes, address: str) -> bool:
    """Whether a resolvable private address was made with this IRK."""
    raw = address_bytes(address)
    if raw is None or raw[0] >> 6 != 0b01:
        return False
    return ah(irk, raw[:3]) == raw[3:]


def make_rpa(irk: bytes, prand: bytes) -> str:
    """A resolvable private address for `irk` (what a wearable does; the simulator uses it)."""
    top = bytes([(prand[0] & 0x3F) | 0x40]) + prand[1:3]
    return ":".join(f"{b:02X}" for b in top + ah(irk, top))
