"""The platform's receiver core against a real PostgreSQL (started by the test, as the
broker is): every verified message one row however often and by whichever bearer it
came, gaps opened and closed as late messages arrive, a life-safety row announced when
it is committed, and a hostile gateway (junk, a foreign key, replayed seqs, a flood)
counted and quarantined while an honest one's messages all land."""

from __future__ import annotations

import datetime as dt
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
from tools.receive.store import MIGRATIONS, Store

PREFIX = "gridedge/v1"


@pytest.fixture
def pg() -> Iterator[Postgres]:
    with postgres() as server:
        yield server


@pytest.fixture
def store(pg: Postgres) -> Iterator[Store]:
    with Store.open(pg.dsn) as s:
        yield s


def payload(
    gw: str, seq: int, kind: str = "gnss.fix", d: Any = None, *, ep: int = 1, tq: str = "gnss"
) -> dict[str, Any]:
    return {
        "v": 1,
        "gw": gw,
        "ep": [ep, b"\x07" * 8],
        "seq": seq,
        "kind": kind,
        "src": "x",
        "prio": 0 if kind == "sos.alarm" else 2,
        "tq": tq,
        "recs": [
            {"tb": 1000 * seq, "tu": 1_800_000_000_000 + seq, "d": d if d is not None else {"lat": 21.9}}
        ],
    }


class Gw:
    def __init__(self, name: str) -> None:
        self.name = name
        self.signer = Signer(Ed25519PrivateKey.generate())

    def msg(
        self, seq: int, kind: str = "gnss.fix", d: Any = None, *, ep: int = 1, tq: str = "gnss"
    ) -> tuple[str, bytes]:
        topic = (
            f"{PREFIX}/{self.name}/status" if kind == "gateway.status" else f"{PREFIX}/{self.name}/up/{kind}"
        )
        return topic, self.signer.sign_bytes(cbor2.dumps(payload(self.name, seq, kind, d, ep=ep, tq=tq)))

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
        assert second.migrate() == len(MIGRATIONS) == 2
    assert rows(pg, "SELECT version FROM gridedge_schema ORDER BY version") == [(1,), (2,)]


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


def test_a_batch_holds_each_seq_once_whatever_the_order(pg: Postgres, store: Store) -> None:
    """After an outage the newest message comes first and the backlog after it, some of it
    twice (a resend, the SMS copy, the same message twice in one batch); whatever the
    order and however the batches fall, each seq is one row and no gap stays open."""
    a = Gw("gw-a")
    store.register(a.name, a.signer.public_key)
    r = Receiver(store)
    assert r.take(*a.msg(40)) == "stored"  # live first
    assert store.gaps("gw-a") == []  # nothing known below the first seq heard yet
    backlog = [a.msg(s) for s in (10, 12, 11, 12, 39, 20)]
    with store.batch():
        assert r.take_many(backlog) == ["stored", "stored", "stored", "duplicate", "stored", "stored"]
    assert store.gaps("gw-a") == [(13, 19), (21, 38)]
    with store.batch():
        outcomes = r.take_many([a.msg(s) for s in [*range(10, 41), 5]])
    assert outcomes.count("stored") == 40 - 10 + 1 - 6 + 1  # what was missing, and seq 5 below the first
    assert store.gaps("gw-a") == [(6, 9)]  # below seq 10 now: seq 5 says 6-9 were sent
    assert rows(pg, "SELECT count(*), count(DISTINCT seq) FROM messages") == [(32, 32)]
    assert rows(pg, "SELECT first_seq, last_seq, received FROM epochs") == [(5, 40, 32)]


def test_messages_are_kept_in_daily_partitions_and_old_days_dropped(pg: Postgres, store: Store) -> None:
    a = Gw("gw-a")
    store.register(a.name, a.signer.public_key)
    days = store.days()
    today = dt.datetime.now(dt.UTC).date()
    assert today - dt.timedelta(days=1) in days and today + dt.timedelta(days=7) in days
    Receiver(store).take(*a.msg(1))
    assert rows(pg, "SELECT tableoid::regclass::text FROM messages") == [(f"messages_{today:%Y%m%d}",)]
    assert store.drop_days_before(today) == [today - dt.timedelta(days=1)]
    # a day dropped is not a door for its messages to come back: the epoch remembers them
    store.drop_days_before(today + dt.timedelta(days=1))
    assert rows(pg, "SELECT count(*) FROM messages") == [(0,)]
    assert Receiver(store).take(*a.msg(1)) == "duplicate"
    # a day whose rows had to wait in the default partition keeps them there
    with psycopg.connect(pg.dsn) as c:
        c.execute(
            "INSERT INTO messages (day, gw, ep_counter, ep_nonce, seq, kind, src, prio, tq, bearer, recs)"
            " VALUES (%s, 'gw-a', 9, '\\x00', 1, 'k', 's', 2, 'gnss', 'mqtt', '[]')",
            (today + dt.timedelta(days=30),),
        )
    assert today + dt.timedelta(days=30) not in store.make_days(ahead=40)


def test_records_stamped_before_the_clock_was_trusted_are_re_dated(pg: Postgres, store: Store) -> None:
    """A record from a clock not yet trusted gets its time from the boot's anchor, even
    when the anchor comes later, from a later epoch of the same boot; never across a reboot."""
    a = Gw("gw-a")
    store.register(a.name, a.signer.public_key)
    r = Receiver(store)
    r.take(*a.msg(0, "gateway.status", {"boot": "boot-1", "hw": 0}))
    r.take(*a.msg(3, tq="rtc"))  # tb 3000, its tu from a clock nobody trusts
    r.take(*a.msg(0, "gateway.status", {"boot": "boot-2", "hw": 0}, ep=2))
    r.take(*a.msg(4, tq="none", ep=2))  # after a reboot: no anchor of boot-2 comes
    assert rows(pg, "SELECT seq, tu_dated FROM records_dated ORDER BY ep_counter") == [(3, None), (4, None)]
    r.take(*a.msg(0, "gateway.status", {"boot": "boot-1", "hw": 0}, ep=3))  # a restart, same boot
    anchor = {"boot": "boot-1", "tb": 10_000, "tu": 1_900_000_000_000, "tq": "gnss"}
    assert r.take(*a.msg(1, "time.anchor", anchor, ep=3)) == "stored"
    assert rows(
        pg, "SELECT seq, tu_dated FROM records_dated WHERE kind = 'gnss.fix' ORDER BY ep_counter"
    ) == [
        (3, 1_900_000_000_000 - 7_000),
        (4, None),
    ]
    # a trusted record keeps its own time
    r.take(*a.msg(5, ep=3))
    assert rows(pg, "SELECT tu, tu_dated FROM records_dated WHERE seq = 5") == [(1_800_000_000_005,) * 2]


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
