"""Resolvable private addresses: the Core Specification's sample data, and bumble's own ah()."""

from __future__ import annotations

from bumble import crypto
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.rpa import ah, is_resolvable, make_rpa, resolves


def test_spec_sample_data() -> None:
    # Core Spec Vol 3 Part H, Appendix D.7 (ah): IRK, prand and the expected hash.
    irk = bytes.fromhex("ec0234a357c8ad05341010a60a397d9b")
    assert ah(irk, bytes.fromhex("708194")) == bytes.fromhex("0dfbaa")
    assert resolves(irk, "70:81:94:0D:FB:AA")
    assert not resolves(irk, "70:81:94:0D:FB:AB")


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=3, max_size=3))
def test_agrees_with_bumble(irk: bytes, prand: bytes) -> None:
    address = make_rpa(irk, prand)
    assert is_resolvable(address) and resolves(irk, address)
    raw = bytes.fromhex(address.replace(":", ""))
    # bumble works little-endian: the same hash, byte-reversed
    assert crypto.ah(irk[::-1], raw[2::-1]) == raw[:2:-1]


def test_another_key_does_not_resolve() -> None:
    irk = bytes(range(16))
    address = make_rpa(irk, b"\x12\x34\x56")
    assert resolves(irk, address)
    assert not resolves(bytes(b ^ 0x80 for b in irk), address)


def test_not_an_rpa() -> None:
    irk = bytes(16)
    assert not resolves(irk, "C0:FF:EE:00:00:01")  # static random: top bits 0b11
    assert not resolves(irk, "not an address")
    assert not is_resolvable("12:34")
