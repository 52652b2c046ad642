"""Fill a gateway's outbox with a signed telemetry backlog before it starts (as after an outage)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cbor2

from edge.ingest import start_epoch
from edge.outbox import Outbox, Pending
from floor.envelope import Signer, load_private_key
from floor.kinds import Prio


def prefill(
    state_dir: Path, key: Path, gw: str, n: int, *, kind: str = "gnss.fix", src: str = "backlog"
) -> int:
    """Commit `n` signed telemetry messages; return the highest seq."""
    signer = Signer(load_private_key(key.read_bytes()))
    epoch = start_epoch(state_dir)

    def maker(i: int) -> Pending:
        rec = {"tb": i, "tu": None, "d": {"lat": 21.9, "lon": 112.8, "fix": 3, "i": i}}

        def make(seq: int) -> bytes:
            return signer.sign_bytes(
                cbor2.dumps(
                    {
                        "v": 1,
                        "gw": gw,
                        "ep": [epoch.counter, epoch.nonce],
                        "seq": seq,
                        "kind": kind,
                        "src": src,
                        "prio": int(Prio.TELEMETRY),
                        "tq": "none",
                        "recs": [rec],
                    }
                )
            )

        return Pending(Prio.TELEMETRY, kind, src, i, make)

    async def go() -> int:
        async with Outbox(state_dir / "outbox.sqlite") as ob:
            for start in range(0, n, 10_000):
                futs = [ob.submit(maker(i)) for i in range(start, min(n, start + 10_000))]
                await ob.flush()
                await asyncio.gather(*futs)
            return ob.hw

    return asyncio.run(go())
