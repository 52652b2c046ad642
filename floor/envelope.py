"""COSE_Sign1 (RFC 9052) with Ed25519, sans-IO: bytes in, bytes or a typed error out.

Theory of operation: the protected header is fixed per key (`{1: -8, 4: kid}`), so it
is encoded once; signing builds the Sig_structure `["Signature1", protected, h'',
payload]` (RFC 9052 section 4.4) and wraps the result in CBOR tag 18. Verification
accepts alg -8 (EdDSA) and -19 (Ed25519, RFC 9864), looks the key up by `kid` and
never trusts anything in the unprotected header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from floor import cbor_guard
from floor.clock import TimeQuality
from floor.errors import EnvelopeError, EnvelopeReason

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
ALG_ED25519 = -19  # RFC 9864's fully specified name for the same algorithm
HDR_ALG = 1
HDR_KID = 4
ENVELOPE_VERSION = 1
# A command or manifest never needs more; bigger input is refused before CBOR decoding.
DEFAULT_MAX_BYTES = 256 * 1024

_SIG1 = cbor2.dumps("Signature1")
_EMPTY_BSTR = cbor2.dumps(b"")


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of(key: Ed25519PublicKey) -> bytes:
    """First 8 bytes of SHA-256 of the raw public key (docs/envelope-and-topics.md, the envelope)."""
    return hashlib.sha256(raw_public(key)).digest()[:8]


def bstr(data: bytes) -> bytes:
    """CBOR byte string (major type 2): its head, then the bytes (RFC 8949, 3.1)."""
    n = len(data)
    if n < 24:
        head = bytes((0x40 | n,))
    elif n < 0x100:
        head = bytes((0x58, n))
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    elif n < 0x100000000:
        head = b"\x5a" + n.to_bytes(4, "big")
    else:
        head = b"\x5b" + n.to_bytes(8, "big")
    return head + data


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    # CBOR array(4) header is 0x84; the parts are already CBOR-encoded.
    return b"\x84" + _SIG1 + bstr(protected) + _EMPTY_BSTR + bstr(payload)


class Signer:
    """Signs payloads with one Ed25519 key."""

    __slots__ = ("_key", "_protected", "_protected_cbor", "_sig_head", "kid", "public_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.kid = kid_of(self.public_key)
        self._protected = cbor2.dumps({HDR_ALG: ALG_EDDSA, HDR_KID: self.kid})
        self._protected_cbor = bstr(self._protected)
        # Sig_structure up to the payload, the same for every message this key signs
        self._sig_head = b"\x84" + _SIG1 + self._protected_cbor + _EMPTY_BSTR

    def sign_bytes(self, payload: bytes) -> bytes:
        """A tagged COSE_Sign1 over already-encoded payload bytes."""
        payload_cbor = bstr(payload)
        signature = self._key.sign(self._sig_head + payload_cbor)
        # tag(18) [protected bstr, {} , payload bstr, signature bstr]
        return b"\xd2\x84" + self._protected_cbor + b"\xa0" + payload_cbor + bstr(signature)

    def signature(self, data: bytes) -> bytes:
        """A bare Ed25519 signature (64 bytes) over `data`: for a form too small for COSE."""
        return self._key.sign(data)

    def sign(self, payload: Mapping[str, Any]) -> bytes:
        """A tagged COSE_Sign1 over the CBOR encoding of `payload`."""
        return self.sign_bytes(cbor2.dumps(dict(payload)))


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified envelope: who signed it and what it says."""

    kid: bytes
    payload: Any
    payload_bytes: bytes


def _decode(data: bytes, max_bytes: int) -> list[Any]:
    if len(data) > max_bytes:
        raise EnvelopeError(EnvelopeReason.TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    obj = _loads(data, "envelope", tags=frozenset({COSE_SIGN1_TAG}))
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise EnvelopeError(EnvelopeReason.STRUCTURE, "not a tagged COSE_Sign1")
    value = obj.value
    if not isinstance(value, list) or len(value) != 4:
        raise EnvelopeError(EnvelopeReason.STRUCTURE, "COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = value
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, dict)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise EnvelopeError(EnvelopeReason.STRUCTURE, "COSE_Sign1 member of wrong type")
    return value


def verify(
    data: bytes,
    keys: Mapping[bytes, Ed25519PublicKey],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Verified:
    """Check a COSE_Sign1 against trusted keys (by kid) and return its decoded payload."""
    protected, _unprotected, payload, signature = _decode(data, max_bytes)
    headers = _loads(protected, "protected header") if protected else {}
    if not isinstance(headers, dict):
        raise EnvelopeError(EnvelopeReason.STRUCTURE, "protected header is not a map")
    alg = headers.get(HDR_ALG)
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in (ALG_EDDSA, ALG_ED25519):
        # nothing of an unverified message is formatted: only what the check needs is read
        raise EnvelopeError(EnvelopeReason.ALG, "alg is not EdDSA/Ed25519")
    kid = headers.get(HDR_KID)
    if not isinstance(kid, bytes) or kid not in keys:
        raise EnvelopeError(EnvelopeReason.KID, "signer not trusted")
    if len(signature) != 64:
        raise EnvelopeError(EnvelopeReason.SIGNATURE, "Ed25519 signatures are 64 bytes")
    try:
        keys[kid].verify(signature, _sig_structure(protected, payload))
    except InvalidSignature as exc:
        raise EnvelopeError(EnvelopeReason.SIGNATURE) from exc
    decoded = _loads(payload, "payload")  # signed, and still held to the same rules
    return Verified(kid=kid, payload=decoded, payload_bytes=payload)


def _loads(data: bytes, what: str, *, tags: frozenset[int] = frozenset()) -> Any:
    """CBOR from outside, checked before it is decoded (floor/cbor_guard.py)."""
    try:
        cbor_guard.check(data, tags=tags)
        return cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on hostile input; all mean "not CBOR"
        reason = str(exc) if isinstance(exc, cbor_guard.CborRefused) else type(exc).__name__
        raise EnvelopeError(EnvelopeReason.CBOR, f"{what}: {reason}") from None


def own_payload(signed: bytes) -> Any:
    """The payload of a message this gateway signed (its outbox rows): not verified, as
    nothing from outside could have put it there."""
    return cbor2.loads(cbor2.loads(signed).value[2])


def keyring(*keys: Ed25519PublicKey) -> dict[bytes, Ed25519PublicKey]:
    """Map kid to key, as `verify` wants."""
    return {kid_of(k): k for k in keys}


# Gateway message payload keys and their types (docs/envelope-and-topics.md, the envelope).
_GATEWAY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "gw": str,
    "ep": list,
    "seq": int,
    "kind": str,
    "src": str,
    "prio": int,
    "tq": str,
    "recs": list,
}
TIME_QUALITIES = frozenset(TimeQuality)


def check_gateway_payload(payload: Any) -> dict[str, Any]:
    """Validate the shape of a gateway message payload; return it typed."""
    if not isinstance(payload, dict):
        raise EnvelopeError(EnvelopeReason.PAYLOAD, "payload is not a map")
    for key, typ in _GATEWAY_FIELDS.items():
        if not isinstance(payload.get(key), typ) or isinstance(payload.get(key), bool):
            raise EnvelopeError(EnvelopeReason.PAYLOAD, f"{key!r} missing or of wrong type")
    ep = payload["ep"]
    if len(ep) != 2 or not isinstance(ep[0], int) or not isinstance(ep[1], bytes) or len(ep[1]) != 8:
        raise EnvelopeError(EnvelopeReason.PAYLOAD, "'ep' must be [uint, bytes(8)]")
    if payload["v"] != ENVELOPE_VERSION:
        raise EnvelopeError(EnvelopeReason.PAYLOAD, f"unknown envelope version {payload['v']} ('v')")
    if payload["tq"] not in TIME_QUALITIES:
        raise EnvelopeError(EnvelopeReason.PAYLOAD, f"'tq' {payload['tq']!r} is not a time quality")
    for i, rec in enumerate(payload["recs"]):
        if problem := _record_problem(rec):
            raise EnvelopeError(EnvelopeReason.PAYLOAD, f"record {i}: {problem}")
    return payload


MAX_RECORD_DEPTH = 8


def _record_problem(rec: Any) -> str:
    """Why a record is not `{"tb": int, "tu": int or null, "d": map}` with text or number
    keys all the way down and plain values (what any consumer can print or store), or ""."""
    if not isinstance(rec, dict) or set(rec) != {"tb", "tu", "d"}:
        return "not a map of tb, tu, d"
    tb, tu = rec["tb"], rec["tu"]
    if not isinstance(tb, int) or isinstance(tb, bool) or not (tu is None or type(tu) is int):
        return "tb must be an integer, tu an integer or null"
    if not isinstance(rec["d"], dict):
        return "d is not a map"
    return _value_problem(rec["d"], 0)


def _value_problem(v: Any, depth: int) -> str:
    if depth > MAX_RECORD_DEPTH:
        return "nested too deep"
    if isinstance(v, dict):
        for k, x in v.items():
            if not (k is None or isinstance(k, str | int | float)):  # what JSON can name a key by
                return f"a key of type {type(k).__name__}"
            if problem := _value_problem(x, depth + 1):
                return problem
        return ""
    if isinstance(v, list):
        return next((p for x in v if (p := _value_problem(x, depth + 1))), "")
    if v is None or isinstance(v, bool | int | float | str | bytes):
        return ""
    return f"a value of type {type(v).__name__}"


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PEM PKCS8, unencrypted (the file's mode protects it)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    """PEM SubjectPublicKeyInfo."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM PKCS8."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM SubjectPublicKeyInfo."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
