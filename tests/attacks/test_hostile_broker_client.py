"""Threat: a hostile client of the broker (or a hostile broker) sends the gateway, or the
platform's `gridedge verify`, bytes that are not what they claim. Nothing unverified may
be expanded, formatted or walked beyond what the check needs: verified, or a typed
rejection, fast."""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.base.cbor_guard import CborRefused, check
from edge.base.envelope import COSE_SIGN1_TAG, Signer, keyring, verify
from edge.base.errors import EnvelopeError, EnvelopeReason

KEY = Ed25519PrivateKey.generate()
KEYS = keyring(KEY.public_key())


def shared_reference_bomb(levels: int = 6, width: int = 10) -> bytes:
    """A list named `width` times at each of `levels` levels: width**levels leaves when
    expanded, a few hundred bytes with CBOR's shared references (tags 28 and 29)."""
    node: list[object] = [1]
    for _ in range(levels):
        node = [node] * width
    return cbor2.dumps({1: node, 4: b"k" * 8}, value_sharing=True)


def test_a_shared_reference_bomb_in_the_protected_header_is_refused_unexpanded() -> None:
    protected = shared_reference_bomb()
    assert len(protected) < 1000  # a million leaves in under a kilobyte
    msg = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, b"", b"\0" * 64]))
    try:
        verify(msg, KEYS)
    except EnvelopeError as exc:
        assert exc.reason == EnvelopeReason.CBOR
        assert len(str(exc)) < 200  # nothing of the header in the message
    else:
        raise AssertionError("verified")


def test_the_guard_refuses_other_tags_indefinite_lengths_and_depth() -> None:
    for bad in (
        cbor2.dumps(cbor2.CBORTag(28, [1])),  # a shareable value
        b"\x9f\x01\xff",  # an indefinite-length array
        b"\x81" * 40 + b"\x01",  # 40 levels of arrays
        b"\x9b" + b"\xff" * 8,  # an array that claims 2**64 - 1 items
        b"\x01\x01",  # two items, not one
    ):
        try:
            check(bad)
        except CborRefused:
            continue
        raise AssertionError(bad.hex())
    check(cbor2.dumps({"v": 1, "recs": [{"d": {"lat": 1.5}}], "b": b"x"}))  # what we do send


def test_a_genuine_message_still_verifies() -> None:
    signed = Signer(KEY).sign({"v": 1, "id": "x"})
    assert verify(signed, KEYS).payload == {"v": 1, "id": "x"}


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers() | st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_any_bytes_verify_or_are_refused_with_a_reason(data: bytes) -> None:
    try:
        verify(data, KEYS)
    except EnvelopeError as exc:
        assert isinstance(exc.reason, EnvelopeReason)


@settings(max_examples=300, deadline=200)
@given(cbor_values, cbor_values, st.binary(max_size=80))
def test_any_cose_shaped_message_verifies_or_is_refused_with_a_reason(
    header: object, payload: object, signature: bytes
) -> None:
    protected = cbor2.dumps(header)
    msg = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, cbor2.dumps(payload), signature]))
    try:
        verify(msg, KEYS)
    except EnvelopeError as exc:
        assert isinstance(exc.reason, EnvelopeReason)
    else:
        raise AssertionError("an unsigned message verified")
