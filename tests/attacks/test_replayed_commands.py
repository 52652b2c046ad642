"""Threat: a hostile broker client replays a valid signed command it saw, thousands of
times. Each is refused (counted), but each may not cost a signed cmd.result in the
outbox: replays and queue overflows share the junk's rate limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.commands import REJECT_REPORTS_PER_S, Command, CommandHandler
from floor.clock import Clock
from floor.envelope import Signer
from floor.messages import Incoming


def test_a_flood_of_replays_is_counted_not_reported_one_by_one(tmp_path: Path) -> None:
    platform = Signer(Ed25519PrivateKey.generate())
    now = int(time.time() * 1000)
    signed = platform.sign(
        {
            "v": 1,
            "id": str(uuid.uuid4()),
            "to": "gw-1",
            "cseq": 1,
            "iat": now,
            "exp": now + 60_000,
            "type": "diag.snapshot",
            "args": {},
        }
    )
    reports: list[dict[str, Any]] = []

    async def diag(_cmd: Command) -> dict[str, Any]:
        return {}

    async def go() -> tuple[CommandHandler, float]:
        handler = CommandHandler(
            gw="gw-1",
            groups=(),
            prefix="gridedge/v1",
            trust=platform.public_key,
            clock=Clock(synced=True),
            state_path=tmp_path / "commands.json",
            report=lambda _k, d: reports.append(dict(d)),
            handlers={"diag.snapshot": diag},
        )
        task = asyncio.create_task(handler.run())
        started = time.monotonic()
        for _ in range(2000):
            handler.on_message(Incoming("gridedge/v1/gw-1/cmd", signed, False, 1))
            await asyncio.sleep(0)
        while sum(handler.rejected.values()) + handler.accepted < 2000:  # noqa: ASYNC110 (an observer)
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return handler, time.monotonic() - started

    handler, took = asyncio.run(go())
    assert handler.accepted == 1 and [r["ok"] for r in reports].count(True) == 1  # the genuine one
    assert handler.rejected.get("replay", 0) + handler.rejected.get("busy", 0) == 1999  # all counted
    refusals = [r for r in reports if not r["ok"]]
    assert len(refusals) <= REJECT_REPORTS_PER_S * (1 + took) + 1, (len(refusals), took)
