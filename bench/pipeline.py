"""End to end records/s: GNSS driver -> signed -> outbox -> broker PUBACK -> deleted,
against bare paho-mqtt QoS 1 publishes to the same broker, in one run.

    .venv/bin/python -m bench.pipeline [--records N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import result, table
from bench.harness import bare_qos1_rate, mosquitto, pipeline, wait_delivered, wait_drained
from drivers.gnss.driver import GnssDriver
from drivers.gnss.part import GnssDevice
from drivers.gnss.sim import walk
from floor.clock import Clock
from floor.config import SerialPort


def nmea(n: int, start_utc: float = 1_790_000_000.0) -> list[bytes]:
    """`n` epochs (RMC+GGA+GSA) of a receiver walking at 10 Hz, one bytes per epoch."""
    epochs = walk(start_utc=start_utc, hz=10.0)
    return [next(epochs) for _ in range(n)]


async def run_pipeline(
    port: int, epochs: list[bytes], *, batch_ms: int, sources: int = 8
) -> tuple[float, float, int, int]:
    """Feed the epochs, 10 at a time, round-robin through `sources` GNSS drivers (each
    read whole: a receiver's stream is split anywhere, but never across receivers).
    Returns wall seconds, CPU seconds, records ingested and messages made."""
    with tempfile.TemporaryDirectory() as d:
        async with pipeline(Path(d), port, batch_ms=batch_ms) as p:
            await asyncio.wait_for(p.publisher.up.wait(), 10)
            drivers = [
                GnssDriver(
                    GnssDevice(id=f"gnss{i}", source=SerialPort(port="bench"), min_interval_s=0.0),
                    emit=p.ingest.submit,
                    clock=Clock(synced=True),
                )
                for i in range(sources)
            ]
            for drv in drivers:
                drv._new_stream()
            chunks = [b"".join(epochs[i : i + 10]) for i in range(0, len(epochs), 10)]
            records0 = p.ingest.records
            cpu0, t0 = time.process_time(), time.perf_counter()
            for i, chunk in enumerate(chunks):
                await p.outbox.room()  # backpressure, as the drivers' read loops do
                drivers[i % sources]._feed(chunk, i)
                await asyncio.sleep(0)
            for drv in drivers:
                drv._flush(0)
            p.ingest.flush_all()
            await wait_delivered(p)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            await wait_drained(p)  # and every row deleted, untimed
            rejected = sum(sum(drv.counters.rejected.values()) for drv in drivers)
            if rejected:
                raise RuntimeError(f"the bench's own NMEA was rejected {rejected} times")
            return wall, cpu, p.ingest.records - records0, p.outbox.hw  # messages, written or not


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--bare", type=int, default=50_000, help="bare QoS 1 publishes to time")
    ap.add_argument("--rounds", type=int, default=3, help="bare, batched, unbatched; medians reported")
    args = ap.parse_args()
    epochs = nmea(args.records)
    rounds: list[dict[str, float]] = []
    with mosquitto() as (port, _):
        for _ in range(args.rounds):
            # Each round times all three back to back, so a ratio compares like with like
            # on a machine whose speed drifts from minute to minute.
            bare = bare_qos1_rate(port, args.bare, b"x" * 180)
            wall, cpu, n, msgs = asyncio.run(run_pipeline(port, epochs, batch_ms=250))
            wall_u, _cpu_u, n_unb, msgs_u = asyncio.run(run_pipeline(port, epochs[:30_000], batch_ms=0))
            rounds.append(
                {
                    "records_per_s": n / wall,
                    "bare_msgs_per_s": bare,
                    "ratio": n / wall / bare,
                    "unbatched_ratio": msgs_u / wall_u / bare,
                    "cpu_us_per_record": cpu / n * 1e6,
                    "messages": msgs,
                    "unbatched_msgs_per_s": msgs_u / wall_u,
                    "unbatched_records": n_unb,
                }
            )
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}

    def each(key: str, fmt: str) -> str:
        return " / ".join(format(r[key], fmt) for r in rounds)

    table(
        f"Pipeline: GNSS driver -> signed -> outbox (FULL) -> QoS 1 PUBACK -> deleted "
        f"(median of {len(rounds)} rounds)",
        [
            ("bare paho QoS 1 publish (180 B, 64 in flight)", f"{med['bare_msgs_per_s']:,.0f} msgs/s"),
            (
                "gridedge batched (batch_ms=250, 8 receivers)",
                f"{med['records_per_s']:,.0f} records/s in {med['messages']:,.0f} messages",
            ),
            (
                "gridedge unbatched (batch_ms=0)",
                f"{med['unbatched_msgs_per_s']:,.0f} msgs/s ({med['unbatched_records']:,.0f} records)",
            ),
            ("ratio batched records/s / bare msgs/s", f"{med['ratio']:.2f} (rounds {each('ratio', '.2f')})"),
            (
                "ratio unbatched msgs/s / bare msgs/s",
                f"{med['unbatched_ratio']:.2f} (rounds {each('unbatched_ratio', '.2f')})",
            ),
            ("CPU per record (all threads, batched)", f"{med['cpu_us_per_record']:.1f} us"),
        ],
    )
    result(
        "pipeline",
        records_per_s=med["records_per_s"],
        bare_msgs_per_s=med["bare_msgs_per_s"],
        ratio=med["ratio"],
        unbatched_ratio=med["unbatched_ratio"],
        cpu_us_per_record=med["cpu_us_per_record"],
    )


if __name__ == "__main__":
    main()
