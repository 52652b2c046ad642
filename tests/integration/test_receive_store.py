"""The platform's receiver core against a real PostgreSQL (started by the test, as the
broker is): every verified message one row however often and by whichever bearer it
came, gaps opened and closed as late messages arrive, a life-safety row announced when
it is committed, and a hostile gateway (junk, a foreign key, replayed seqs, a flood)
counted and quarantined while an honest one's messages all land."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import cbor2
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor import compact
from floor.envelope import Signer
from tests.support.postgres import Postgres, postgres
from tools.receive.receiver import Receiver
from tools.receive.store import Store

PREFIX = "gridedge/v1"


@pytest.fixture
def pg() -> Iterator[Postgres]:
    with postgres() as server:
        yield server


@pytest.fixture
def store(pg: Postgres) -> Iterator[Store]:
    with Store.open(pg.dsn) as s:
        yield s


def payload(gw: str, seq: int, kind: str = "gnss.fix", d: Any = None, ep: int = 1) -> dict[str, Any]:
    return {
        "v": 1,
        "gw": gw,
        "ep": [ep, b"\x07" * 8],
        "seq": seq,
        "kind": kind,
        "src": "x",
        "prio": 0 if kind == "sos.alarm" else 2,
        "tq": "gnss",
        "recs": [{"tb": seq, "tu": 1_800_000_000_000 + seq, "d": d if d is not None else {"lat": 21.9}}],
    }


class Gw:
    def __init__(self, name: str) -> None:
        self.name = name
        self.signer = Signer(Ed25519PrivateKey.generate())

    def msg(self, seq: int, kind: str = "gnss.fix", d: Any = None) -> tuple[str, bytes]:
        return f"{PREFIX}/{self.name}/up/{kind}", self.signer.sign_bytes(
            cbor2.dumps(payload(self.name, seq, kind, d))
        )

    def sms(self, seq: int, kind: str = "sos.alarm") -> bytes:
        return self.signer.sign_bytes(cbor2.dumps(compact.pack(payload(self.name, seq, kind))))


def rows(pg: Postgres, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.dsn) as c:
        return c.execute(sql, args).fetchall()


def test_a_message_is_one_row_however_often_and_however_it_came(pg: Postgres, store: Store) -> None:
    a = Gw("gw-a")
    store.register(a.name, a.signer.public_key)
    r = Receiver(store)
    assert r.take(*a.msg(1, "sos.alarm")) == "stored"
    assert r.take(*a.msg(1, "sos.alarm")) == "duplicate"  # the broker's redelivery
    assert r.take_compact(a.sms(1), "sms") == "duplicate"  # the SMS copy of the same alarm
    assert r.take_compact(a.sms(2), "sms") == "stored"  # an alarm the SMS brought first...
    assert r.take(*a.msg(2, "sos.alarm")) == "duplicate"  # ...and its MQTT copy later
    assert rows(pg, "SELECT seq, bearer FROM messages ORDER BY seq") == [(1, "mqtt"), (2, "sms")]
    with Store.open(pg.dsn) as second:  # a second instance: the schema once
        assert second.migrate() == 1
    assert rows(pg, "SELECT version FROM gridedge_schema") == [(1,)]


def test_gaps_open_and_close_as_late_messages_arrive(pg: Postgres, store: Store) -> None:
    a = Gw("gw-a")
    store.register(a.name, a.signer.public_key)
    r = Receiver(store)
    for seq in (1, 2, 6, 9):
        r.take(*a.msg(seq))
    assert store.gaps("gw-a") == [(3, 5), (7, 8)]
    r.take(*a.msg(4))
    assert store.gaps("gw-a") == [(3, 3), (5, 5), (7, 8)]
    for seq in (3, 5, 7, 8):
        r.take(*a.msg(seq))
    assert store.gaps("gw-a") == []
    assert rows(pg, "SELECT first_seq, last_seq, received FROM epochs") == [(1, 9, 9)]


def test_a_life_safety_row_is_announced_when_it_is_committed(pg: Postgres, store: Store) -> None:
    a = Gw("gw-a")
    store.register(a.name, a.signer.public_key)
    with psycopg.connect(pg.dsn, autocommit=True) as listener:
        listener.execute("LISTEN gridedge_life_safety")
        Receiver(store).take(*a.msg(7, "sos.alarm"))
        Receiver(store).take(*a.msg(8))  # telemetry: not announced
        got = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
    assert got == [{"gw": "gw-a", "ep": [1, "07" * 8], "seq": 7, "kind": "sos.alarm", "bearer": "mqtt"}]


def test_a_hostile_gateway_is_quarantined_while_an_honest_one_lands(pg: Postgres, store: Store) -> None:
    bad, good, stranger = Gw("gw-bad"), Gw("gw-good"), Gw("gw-stranger")
    store.register(bad.name, bad.signer.public_key)
    store.register(good.name, good.signer.public_key)
    r = Receiver(store, quarantine_after=20)
    outcomes = []
    for seq in range(1, 301):
        outcomes.append(
            r.take(*bad.msg(seq, d={b"k": 1} if seq <= 25 else {"lat": 1.0}))
        )  # junk, then a flood
        outcomes.append(r.take(*bad.msg(1)))  # a replayed seq
        outcomes.append(r.take(*stranger.msg(seq)))  # a key nobody registered
        assert r.take(*good.msg(seq)) == "stored"
    assert outcomes.count("junk") == 20 and "quarantined" in outcomes and "unknown_kid" in outcomes
    assert rows(pg, "SELECT count(*) FROM messages WHERE gw = 'gw-good'") == [(300,)]
    # of the bad one, only what it sent valid before its quarantine: its seq 1, once
    assert rows(pg, "SELECT seq FROM messages WHERE gw <> 'gw-good'") == [(1,)]
    ((status, junk, refused),) = rows(pg, "SELECT status, junk, refused FROM gateways WHERE gw = 'gw-bad'")
    assert status == "quarantined" and junk == 20 and refused > 500
