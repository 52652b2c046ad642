"""Opening the outbox's database: checked for corruption and truncation, set up for WAL
and the disk budget, and read for where the seqs and the lanes stand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.outbox.model import RESERVE_KEY, SCHEMA, CorruptOutbox, Limits, SeqRecord
from edge.sqlite_thread import SqliteThread


@dataclass(frozen=True, slots=True)
class Opened:
    page_size: int
    hw: int  # the highest seq ever committed (sqlite_sequence)
    rows: int  # rows in the outbox (their lanes and bytes are counted after the start)
    used_bytes: int  # the pages in use: what the rows cost until they are counted
    reserved: int = 0  # the highest seq the last run may have given a message
    outstanding: bool = False  # what is recorded says seqs may be outstanding (low <= high)
    low: int = 1  # what is recorded: below it every seq is written, acknowledged or never given
    written: tuple[tuple[int, int], ...] = ()  # ...and the seqs from `low` up written first
    # seqs the last run gave messages that were neither saved nor known to be acknowledged
    # when it stopped without closing (a SIGKILL, a power cut): [[first, last], ...]
    unsaved: tuple[tuple[int, int], ...] = ()


def suspect_marker(path: Path) -> Path:
    """Left by a check that failed while running: the next open checks in full first."""
    return path.with_name(path.name + ".suspect")


async def quick_check(db: SqliteThread, path: Path) -> None:
    """CorruptOutbox unless SQLite's quick check passes (it reads the whole file)."""
    (verdict,) = await db.fetchone("PRAGMA quick_check(1)") or ("no answer",)
    if verdict != "ok":
        raise CorruptOutbox(f"{path}: integrity check: {verdict}")


async def check_integrity(db: SqliteThread, path: Path, *, full: bool) -> None:
    """CorruptOutbox unless the file is as long as it says and (with `full`) SQLite's quick
    check passes. The full check reads the whole file, seconds for a big backlog on an SD
    card: a start does it only after a check found something (the suspect marker); the
    outbox otherwise runs it just after starting (Outbox.run), beside live traffic."""
    if full:
        await quick_check(db, path)
    (pages,) = await db.fetchone("PRAGMA page_count") or (0,)
    (size,) = await db.fetchone("PRAGMA page_size") or (4096,)
    on_disk, wal = _sizes(path)
    if on_disk < int(pages) * int(size) and not wal:
        raise CorruptOutbox(f"{path}: truncated: {on_disk} bytes, {pages} pages of {size} bytes")


def _sizes(path: Path) -> tuple[int, int]:
    """The database file's length and its WAL's (0 for one that is not there)."""
    wal = path.with_name(path.name + "-wal")
    return (path.stat().st_size if path.exists() else 0, wal.stat().st_size if wal.exists() else 0)


async def prepare(db: SqliteThread, path: Path, limits: Limits, *, durable: str, check: bool) -> Opened:
    """Set the connection up (sqlite3.Error/OSError when the disk or the file says no)."""
    if check:
        await check_integrity(db, path, full=suspect_marker(path).exists())
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={durable}")
    # Some builds default to secure_delete=ON, which rewrites every freed page: a
    # delivered 10 KiB message then costs three page writes to delete. FAST zeroes
    # freed content only where that costs no extra I/O.
    await db.execute("PRAGMA secure_delete=FAST")
    row = await db.fetchone("PRAGMA page_size")
    page_size = int(row[0]) if row else 4096
    await db.execute(f"PRAGMA journal_size_limit={limits.wal_allowance}")
    # Checkpoints run on their own connection (edge/outbox/checkpoint.py), never inside a
    # commit an alarm is waiting for.
    await db.execute("PRAGMA wal_autocheckpoint=0")
    await db.execute(f"PRAGMA max_page_count={limits.budget // page_size}")
    await db.executescript(SCHEMA)
    if "at" not in {r[1] for r in await db.fetchall("PRAGMA table_info(msgs)")}:  # from before `at`
        await db.execute("ALTER TABLE msgs ADD COLUMN at INTEGER NOT NULL DEFAULT 0")
    row = await db.fetchone("SELECT seq FROM sqlite_sequence WHERE name = 'msgs'")
    # COUNT(*) of a whole table walks pages, not rows: milliseconds for a million. The
    # lanes (a full scan) are counted after the start (Outbox.run).
    (rows,) = await db.fetchone("SELECT COUNT(*) FROM msgs") or (0,)
    (pages,) = await db.fetchone("PRAGMA page_count") or (0,)
    (free,) = await db.fetchone("PRAGMA freelist_count") or (0,)
    rec, unsaved = await _unsaved(db)
    return Opened(
        page_size,
        int(row[0]) if row else 0,
        int(rows),
        (int(pages) - int(free)) * page_size,
        reserved=rec.high,
        outstanding=not rec.settled,
        low=rec.low,
        written=rec.written,
        unsaved=unsaved,
    )


async def _unsaved(db: SqliteThread) -> tuple[SeqRecord, tuple[tuple[int, int], ...]]:
    """The seqs reserved by the last run, whether any were outstanding, and those it may have
    published and lost: between its last recorded `low` and `high`, those neither in the
    outbox nor recorded as written first (a run that closed saved everything and recorded
    low = high + 1)."""
    row = await db.fetchone("SELECT value FROM state WHERE key = ?", (RESERVE_KEY,))
    try:
        rec = SeqRecord.decode(bytes(row[0])) if row else SeqRecord(1, 0)
    except ValueError:
        return SeqRecord(1, 0), ()
    low, high = rec.low, rec.high
    if rec.settled:
        return rec, ()
    found = await db.fetchall("SELECT seq FROM msgs WHERE seq BETWEEN ? AND ? ORDER BY seq", (low, high))
    # what is on disk, and what was written first and may since have been deleted, is not lost
    present = [(int(s), int(s)) for (s,) in found] + [(a, b) for a, b in rec.written if b >= low]
    out: list[tuple[int, int]] = []
    nxt = low
    for a, b in sorted(present):
        if a > nxt:
            out.append((nxt, min(a - 1, high)))
        nxt = max(nxt, b + 1)
        if nxt > high:
            break
    if nxt <= high:
        out.append((nxt, high))
    return rec, tuple(out)


async def count_lanes(db: SqliteThread) -> dict[int, tuple[int, int]]:
    """prio -> (rows, body bytes): a scan of every row."""
    sql = "SELECT prio, COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM msgs GROUP BY prio"
    return {int(p): (int(n), int(b)) for p, n, b in await db.fetchall(sql)}
