"""COSE_Sign1 envelope: interop with an independent implementation, and refusals."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cwt import COSE, COSEKey
from hypothesis import given
from hypothesis import strategies as st

from floor.envelope import Signer, bstr, check_gateway_payload, keyring, kid_of, verify
from floor.errors import EnvelopeError, EnvelopeReason


def pem_pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem_priv(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


PAYLOAD = {
    "v": 1,
    "gw": "gw-1",
    "ep": [3, b"\x01" * 8],
    "seq": 42,
    "kind": "gnss.fix",
    "src": "gnss0",
    "prio": 2,
    "tq": "gnss",
    "recs": [{"tb": 1000, "tu": 1_790_000_000_000, "d": {"lat": 21.9, "lon": 112.8}}],
}


def test_independent_cose_verifies_what_we_sign(key: Ed25519PrivateKey) -> None:
    signer = Signer(key)
    msg = signer.sign(PAYLOAD)
    payload = COSE.new().decode(msg, COSEKey.from_pem(pem_pub(key), kid=signer.kid))
    assert cbor2.loads(payload) == PAYLOAD
    obj = cbor2.loads(msg)
    assert obj.tag == 18
    protected = cbor2.loads(obj.value[0])
    assert protected == {1: -8, 4: signer.kid}
    assert obj.value[1] == {}


@pytest.mark.parametrize("records", [0, 1, 200, 3000])  # payloads from ~90 B to ~200 KiB: every bstr head
def test_independent_cose_verifies_every_payload_size(key: Ed25519PrivateKey, records: int) -> None:
    signer = Signer(key)
    payload = dict(PAYLOAD, recs=[PAYLOAD["recs"][0]] * records)  # type: ignore[index]
    msg = signer.sign(payload)
    decoded = COSE.new().decode(msg, COSEKey.from_pem(pem_pub(key), kid=signer.kid))
    assert cbor2.loads(decoded) == payload


@given(st.binary(max_size=70_000))
def test_bstr_is_cbor_byte_string(data: bytes) -> None:
    assert bstr(data) == cbor2.dumps(data)
    assert cbor2.loads(bstr(data)) == data


def test_kid_is_sha256_prefix_of_raw_public_key(key: Ed25519PrivateKey) -> None:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert kid_of(key.public_key()) == hashlib.sha256(raw).digest()[:8]


def test_we_verify_what_an_independent_implementation_signs(key: Ed25519PrivateKey) -> None:
    kid = kid_of(key.public_key())
    signed = COSE.new().encode_and_sign(
        cbor2.dumps(PAYLOAD), COSEKey.from_pem(pem_priv(key), kid=kid), protected={1: -8, 4: kid}
    )
    got = verify(signed, keyring(key.public_key()))
    assert got.payload == PAYLOAD
    assert check_gateway_payload(got.payload)["seq"] == 42


def _resign_with_headers(key: Ed25519PrivateKey, headers: dict[int, object]) -> bytes:
    protected = cbor2.dumps(headers)
    payload = cbor2.dumps(PAYLOAD)
    sig = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


def test_alg_minus_19_is_accepted(key: Ed25519PrivateKey) -> None:
    msg = _resign_with_headers(key, {1: -19, 4: kid_of(key.public_key())})
    assert verify(msg, keyring(key.public_key())).payload == PAYLOAD


@pytest.mark.parametrize("alg", [None, 0, -7, -35, "EdDSA", True])
def test_other_alg_is_refused(key: Ed25519PrivateKey, alg: object) -> None:
    headers: dict[int, object] = {4: kid_of(key.public_key())}
    if alg is not None:
        headers[1] = alg
    with pytest.raises(EnvelopeError) as err:
        verify(_resign_with_headers(key, headers), keyring(key.public_key()))
    assert err.value.reason is EnvelopeReason.ALG


def test_every_flipped_byte_is_refused(key: Ed25519PrivateKey) -> None:
    msg = Signer(key).sign(PAYLOAD)
    keys = keyring(key.public_key())
    for i in range(len(msg)):
        for bit in (0x01, 0x80):
            bad = bytearray(msg)
            bad[i] ^= bit
            with pytest.raises(EnvelopeError):
                verify(bytes(bad), keys)


def test_wrong_key_is_refused(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    msg = Signer(other).sign(PAYLOAD)
    with pytest.raises(EnvelopeError) as err:
        verify(msg, keyring(key.public_key()))
    assert err.value.reason is EnvelopeReason.KID
    # Same kid claimed, other key's signature: the signature check is what refuses it.
    forged = _resign_with_headers(other, {1: -8, 4: kid_of(key.public_key())})
    with pytest.raises(EnvelopeError) as err:
        verify(forged, keyring(key.public_key()))
    assert err.value.reason is EnvelopeReason.SIGNATURE


def test_unprotected_kid_is_not_trusted(key: Ed25519PrivateKey) -> None:
    protected = cbor2.dumps({1: -8})
    payload = cbor2.dumps(PAYLOAD)
    sig = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    msg = cbor2.dumps(cbor2.CBORTag(18, [protected, {4: kid_of(key.public_key())}, payload, sig]))
    with pytest.raises(EnvelopeError) as err:
        verify(msg, keyring(key.public_key()))
    assert err.value.reason is EnvelopeReason.KID


def test_oversized_input_is_refused_before_decoding(key: Ed25519PrivateKey) -> None:
    with pytest.raises(EnvelopeError) as err:
        verify(b"\xd2" + b"\x00" * (1024 * 1024), keyring(key.public_key()))
    assert err.value.reason is EnvelopeReason.TOO_LARGE


@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_a_typed_error(data: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(EnvelopeError):
        verify(data, keyring(key.public_key()))


def test_a_resend_is_byte_identical(key: Ed25519PrivateKey) -> None:
    # Ed25519 is deterministic (RFC 8032), so signing the same payload twice is
    # byte-identical too; the outbox still stores the bytes and never re-signs.
    s = Signer(key)
    assert s.sign(PAYLOAD) == s.sign(PAYLOAD)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("seq"), "seq"),
        (lambda p: p.update(ep=[1, b"short"]), "ep"),
        (lambda p: p.update(tq="sundial"), "tq"),
        (lambda p: p.update(v=2), "version"),
        (lambda p: p.update(seq=True), "seq"),
    ],
)
def test_gateway_payload_shape_is_checked(mutate, field) -> None:  # type: ignore[no-untyped-def]
    p = dict(PAYLOAD)
    mutate(p)
    with pytest.raises(EnvelopeError) as err:
        check_gateway_payload(p)
    assert err.value.reason is EnvelopeReason.PAYLOAD
    assert field in str(err.value)
