"""AIS sentences/s through the driver (parse, length checks, shaping, sign, outbox commit)
against pyais's bare decode of the same input, in one run.

    .venv/bin/python -m bench.ais [--sentences N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import pyais
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import result, table
from drivers.ais.driver import AisDriver
from drivers.ais.part import AisDevice
from drivers.ais.tracker import VesselTracker
from edge.ingest import Epoch, Ingest
from edge.outbox import Outbox
from floor.clock import Clock
from floor.config import AisConfig, SerialPort
from floor.envelope import Signer


def make_traffic(n: int, vessels: int = 2000, seed: int = 1) -> list[bytes]:
    """Class A and B position reports for a harbour's worth of vessels, plus static data."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    while len(lines) < n:
        mmsi = 412_000_000 + rng.randrange(vessels)
        kind = rng.random()
        msg: dict[str, str | int | float | bytes | bool]
        if kind < 0.05:
            msg = {
                "type": 5,
                "mmsi": mmsi,
                "shipname": f"MIN YU {mmsi % 1000}",
                "callsign": "BZ123",
                "ship_type": 30,
                "to_bow": 10,
                "to_stern": 20,
                "to_port": 3,
                "to_starboard": 3,
                "destination": "TAISHAN",
            }
        else:
            msg = {
                "type": 1 if kind < 0.8 else 18,
                "mmsi": mmsi,
                "lat": 21.9 + rng.random() * 0.1,
                "lon": 112.7 + rng.random() * 0.1,
                "speed": rng.random() * 12,
                "course": rng.random() * 359,
                "heading": rng.randrange(360),
                "status": 0,
                "second": rng.randrange(60),
            }
        for s in pyais.encode_dict(msg, talker_id="AI", sentence_type="VDM", seq_id=len(lines) % 10):
            lines.append(s.encode() + b"\r\n")
    return lines[:n]


def bare_pyais(lines: list[bytes]) -> float:
    """pyais alone: decode every message (no checksum check, no reassembly bookkeeping of ours)."""
    start = time.perf_counter()
    pending: list[bytes] = []
    for line in lines:
        pending.append(line.rstrip())
        msg = pyais.NMEAMessage(pending[-1])
        if msg.frag_num < msg.frag_cnt:
            continue
        pyais.decode(*pending)
        pending.clear()
    return time.perf_counter() - start


async def gridedge(lines: list[bytes], state: Path) -> tuple[float, int]:
    async with Outbox(state / "outbox.sqlite") as outbox:
        writer = asyncio.create_task(outbox.run())
        ingest = Ingest(
            gw="bench",
            epoch=Epoch(1, b"\0" * 8),
            signer=Signer(Ed25519PrivateKey.generate()),
            outbox=outbox,
            clock=Clock(synced=True),
            batch_ms=250,
        )
        # Shaping off: every report goes up, the costliest case.
        tracker = VesselTracker(AisConfig(min_interval_s=0, min_course_change_deg=0, dedup_window_s=0))
        driver = AisDriver(
            AisDevice(id="ais0", source=SerialPort(port="bench")), emit=ingest.submit, tracker=tracker
        )
        data = b"".join(lines)
        start = time.perf_counter()
        for i in range(0, len(data), 4096):
            driver._feed(data[i : i + 4096], i // 4096)
            await asyncio.sleep(0)  # let the writer commit as it would under a real read loop
        ingest.flush_all()
        await outbox.flush()  # commit what is still queued (waits for a flush in progress)
        elapsed = time.perf_counter() - start
        writer.cancel()
        return elapsed, outbox.hw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=50_000)
    args = ap.parse_args()
    lines = make_traffic(args.sentences)
    bare = bare_pyais(lines)
    with tempfile.TemporaryDirectory() as d:
        ours, messages = asyncio.run(gridedge(lines, Path(d)))
    n = len(lines)
    table(
        "AIS: driver into the outbox vs pyais bare decode",
        [
            ("sentences", f"{n}"),
            ("pyais bare decode", f"{n / bare:,.0f} sentences/s"),
            ("gridedge driver -> signed -> committed", f"{n / ours:,.0f} sentences/s"),
            ("outbox messages committed", f"{messages}"),
            ("ratio (gridedge / bare pyais)", f"{bare / ours:.2f}"),
        ],
    )
    result("ais", sentences_per_s=n / ours, ratio=bare / ours)


if __name__ == "__main__":
    main()
