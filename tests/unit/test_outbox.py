"""The outbox on a real SQLite file: seqs, durability, lanes, deletes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge.outbox import CorruptOutbox, Outbox, OutboxUnavailable, Pending
from floor.kinds import Prio
from tests.support.pieces import run_with_writer


def pending(prio: Prio, tag: bytes = b"x", kind: str = "k") -> Pending:
    return Pending(prio, kind, "src", 0, lambda seq: tag + seq.to_bytes(4, "big"))


def test_seq_never_reused_after_delivery_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"

    async def first() -> list[int]:
        async with Outbox(path) as ob:
            seqs = await run_with_writer(
                ob, asyncio.gather(*(ob.append(pending(Prio.EVENT)) for _ in range(5)))
            )
            ob.ack(seqs)  # everything delivered and deleted
            await run_with_writer(ob, asyncio.sleep(0.05))
            assert ob.depth() == 0
            return list(seqs)

    async def second() -> int:
        async with Outbox(path) as ob:
            assert ob.hw == 5 and ob.depth() == 0
            return int(await run_with_writer(ob, ob.append(pending(Prio.EVENT))))

    assert asyncio.run(first()) == [1, 2, 3, 4, 5]
    assert asyncio.run(second()) == 6


def test_the_signed_bytes_are_stored_and_the_seq_is_inside(tmp_path: Path) -> None:
    async def go() -> None:
        async with Outbox(tmp_path / "o.sqlite") as ob:
            seq = await run_with_writer(ob, ob.append(pending(Prio.LIFE_SAFETY, b"SOS")))
            (row,) = await ob.fetch(Prio.LIFE_SAFETY, 0, 10)
            assert row.seq == seq and row.body == b"SOS" + seq.to_bytes(4, "big")

    asyncio.run(go())
    # committed means on disk: a fresh connection sees it
    with sqlite3.connect(tmp_path / "o.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM msgs").fetchone() == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_group_commit_and_lanes(tmp_path: Path) -> None:
    async def go() -> None:
        async with Outbox(tmp_path / "o.sqlite") as ob:
            futs = [ob.submit(pending(Prio.TELEMETRY)) for _ in range(100)]
            futs.append(ob.submit(pending(Prio.LIFE_SAFETY)))
            seqs = await run_with_writer(ob, asyncio.gather(*futs))
            assert seqs == list(range(1, 102))
            assert ob.stats.commits == 1  # all queued before the writer ran: one commit
            assert ob.depth(Prio.TELEMETRY) == 100 and ob.depth(Prio.LIFE_SAFETY) == 1
            assert [r.seq for r in await ob.fetch(Prio.LIFE_SAFETY, 0, 10)] == [101]
            assert [r.seq for r in await ob.fetch(Prio.TELEMETRY, 50, 3)] == [51, 52, 53]

    asyncio.run(go())


def test_a_failing_producer_does_not_sink_the_batch(tmp_path: Path) -> None:
    def boom(seq: int) -> bytes:
        raise ValueError("bad reading")

    async def go() -> None:
        async with Outbox(tmp_path / "o.sqlite") as ob:
            bad = ob.submit(Pending(Prio.EVENT, "k", "s", 0, boom))
            good = ob.submit(pending(Prio.EVENT))
            await run_with_writer(ob, asyncio.wait([bad, good]))
            assert isinstance(bad.exception(), ValueError)
            assert good.result() == 1

    asyncio.run(go())


def test_messages_are_signed_off_the_event_loop(tmp_path: Path) -> None:
    """Signing is the costliest step of a commit; it runs on the database thread,
    so the loop (drivers, PUBACKs, an alarm's feedback) is not held by it."""
    signed_on: list[int] = []

    def make(seq: int) -> bytes:
        signed_on.append(threading.get_ident())
        return b"signed" + seq.to_bytes(4, "big")

    async def go() -> None:
        async with Outbox(tmp_path / "o.sqlite") as ob:
            done = [ob.submit(Pending(Prio.TELEMETRY, "k", "s", 0, make)) for _ in range(5)]
            await run_with_writer(ob, asyncio.wait(done))
            assert [f.result() for f in done] == [1, 2, 3, 4, 5]

    asyncio.run(go())
    assert len(signed_on) == 5
    assert threading.get_ident() not in signed_on


def test_queued_messages_are_committed_on_close(tmp_path: Path) -> None:
    async def go() -> asyncio.Future[int]:
        async with Outbox(tmp_path / "o.sqlite") as ob:
            return ob.submit(pending(Prio.TELEMETRY))  # no writer task running

    fut = asyncio.run(go())
    assert fut.result() == 1
    with sqlite3.connect(tmp_path / "o.sqlite") as db:
        assert db.execute("SELECT seq FROM msgs").fetchall() == [(1,)]


def test_state_commits_with_its_message_and_outlives_the_delete(tmp_path: Path) -> None:
    """A driver's state record (an SOS event counter) is durable exactly when its message is."""
    path = tmp_path / "o.sqlite"

    async def go() -> None:
        async with Outbox(path) as ob:
            first = Pending(
                Prio.LIFE_SAFETY, "sos.alarm", "b", 0, lambda s: b"a", state=("ble.sos/b", b"\x01")
            )
            seq = await run_with_writer(ob, ob.append(first))
            second = Pending(
                Prio.LIFE_SAFETY, "sos.alarm", "b", 0, lambda s: b"b", state=("ble.sos/b", b"\x02")
            )
            await run_with_writer(ob, ob.append(second))
            ob.ack([seq, seq + 1])  # delivered and deleted: the state stays
            await run_with_writer(ob, asyncio.sleep(0.05))
            assert ob.depth() == 0
            assert await ob.read_state("ble.sos/") == {"ble.sos/b": b"\x02"}
            assert await ob.read_state("other/") == {}

        async with Outbox(path) as ob:
            assert await ob.read_state("ble.") == {"ble.sos/b": b"\x02"}

    asyncio.run(go())
    with sqlite3.connect(path) as db:  # in the file, beside the messages
        assert db.execute("SELECT value FROM state WHERE key = 'ble.sos/b'").fetchone() == (b"\x02",)


def test_only_a_corrupt_outbox_is_called_corrupt(tmp_path: Path) -> None:
    """Quarantine is for corruption: an outbox that cannot be opened for another reason (here
    its path is a directory) is a clear error and is left where it is."""
    (tmp_path / "not-a-db").write_bytes(b"this is not an SQLite database, not at all" * 100)
    (tmp_path / "a-dir").mkdir()

    async def open_(path: Path) -> None:
        async with Outbox(path):
            pass

    with pytest.raises(CorruptOutbox, match="not a database"):
        asyncio.run(open_(tmp_path / "not-a-db"))
    with pytest.raises(OutboxUnavailable, match=r"cannot open the outbox .*a-dir"):
        asyncio.run(open_(tmp_path / "a-dir"))
    assert (tmp_path / "a-dir").is_dir()


def test_a_failed_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    """A failed connect must end its database thread before the open fails: a worker left
    behind can post to an event loop that has closed (an exception in a thread, blamed on
    whatever runs next). With aiosqlite it did, about once in 40 opens."""
    (tmp_path / "a-dir").mkdir()
    errors: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        for _ in range(100):
            with pytest.raises(OutboxUnavailable):
                asyncio.run(Outbox(tmp_path / "a-dir").__aenter__())
        time.sleep(0.2)
    finally:
        threading.excepthook = hook
    assert not errors
    assert not [t for t in threading.enumerate() if t.name.startswith("outbox-")]


def test_telemetry_waits_for_a_group_commit_an_alarm_does_not_and_deletes_ride_along(tmp_path: Path) -> None:
    """On an SD card every commit is an fsync and a few pages: telemetry lingers up to
    group_commit_s for company; an alarm commits at once and takes what is queued with it;
    acknowledged deletes go in the next commit's transaction, not one of their own."""
    from edge.outbox import Limits

    async def go() -> None:
        async with Outbox(tmp_path / "o.sqlite", limits=Limits(group_commit_s=30.0)) as ob:
            writer = asyncio.create_task(ob.run())
            try:
                first = ob.submit(pending(Prio.TELEMETRY))
                await asyncio.sleep(0.3)
                assert not first.done()  # lingering: nothing else has come yet
                alarm = await asyncio.wait_for(ob.append(pending(Prio.LIFE_SAFETY)), 10)
                assert first.done() and first.result() == alarm - 1  # one commit, both
                assert ob.stats.commits == 1
                ob.ack([first.result(), alarm])
                await asyncio.sleep(0.3)
                assert ob.depth() == 2  # the deletes wait for a commit to ride along with
                await asyncio.wait_for(ob.append(pending(Prio.EVENT)), 10)
                assert ob.depth() == 1 and ob.stats.acked == 2
                assert ob.stats.delete_commits == 0 and ob.stats.commits == 2
            finally:
                writer.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await writer

    asyncio.run(go())
