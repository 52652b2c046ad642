"""The gateway's core pieces wired in-process, for tests of one of them against a real
broker or a real SQLite file."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.ingest import Epoch, Ingest
from edge.outbox import Outbox
from floor.clock import Clock
from floor.envelope import Signer


def ingest_for(outbox: Outbox, gw: str = "g", *, batch_ms: int = 0) -> Ingest:
    """An ingest with a fresh key and a synced clock in front of `outbox`."""
    return Ingest(
        gw=gw,
        epoch=Epoch(1, b"\0" * 8),
        signer=Signer(Ed25519PrivateKey.generate()),
        outbox=outbox,
        clock=Clock(synced=True),
        batch_ms=batch_ms,
    )


async def run_with_writer(ob: Outbox, coro):  # type: ignore[no-untyped-def]
    """Await `coro` while the outbox's writer runs, then stop the writer."""
    writer = asyncio.create_task(ob.run())
    try:
        return await coro
    finally:
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
