"""`gridedge verify`'s bookkeeping: duplicates, gaps, reported drops, bad signatures."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor.envelope import Signer, keyring
from tools.verify import Tally, missing_seqs


def msg(s: Signer, seq: int, kind: str = "gnss.fix", ep: int = 1, d: dict | None = None) -> bytes:  # type: ignore[type-arg]
    return s.sign(
        {
            "v": 1,
            "gw": "g1",
            "ep": [ep, b"\x00" * 8],
            "seq": seq,
            "kind": kind,
            "src": "x",
            "prio": 2,
            "tq": "none",
            "recs": [{"tb": 0, "tu": None, "d": d or {}}],
        }
    )


def test_duplicates_gaps_and_reported_drops() -> None:
    s = Signer(Ed25519PrivateKey.generate())
    keys = keyring(s.public_key)
    t = Tally()
    for seq in (1, 2, 2, 3, 6, 9):
        assert t.add("gridedge/v1/g1/up/gnss.fix", msg(s, seq), keys)["ok"]
    t.add("gridedge/v1/g1/up/outbox.dropped", msg(s, 10, "outbox.dropped", d={"ranges": [[4, 5]]}), keys)
    t.add("gridedge/v1/g1/status", msg(s, 0, "gateway.status", d={"state": "online", "hw": 12}), keys)
    summary = t.summary()
    assert summary["duplicates"] == 1
    assert summary["gateways"]["g1"]["missing_seqs"] == [7, 8, 11, 12]  # 4-5 reported; 11-12 below hw
    assert summary["missing"] == 4


def test_bad_signature_and_topic_mismatch_are_invalid() -> None:
    s = Signer(Ed25519PrivateKey.generate())
    other = Signer(Ed25519PrivateKey.generate())
    t = Tally()
    keys = keyring(s.public_key)
    assert not t.add("gridedge/v1/g1/up/x", msg(other, 1), keys)["ok"]
    assert not t.add("gridedge/v1/g2/up/x", msg(s, 1), keys)["ok"]  # g1's message on g2's topic
    assert not t.add("gridedge/v1/g1/up/x", b"\xff\x00garbage", keys)["ok"]
    assert t.summary()["invalid"] == 3


def test_missing_seqs() -> None:
    assert missing_seqs([1, 2, 5]) == [3, 4]
    assert missing_seqs([], hi=2, lo=1) == [1, 2]
