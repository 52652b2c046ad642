"""End to end records/s: GNSS driver -> signed -> outbox -> broker PUBACK -> deleted,
against bare paho-mqtt QoS 1 publishes to the same broker, in one run.

    .venv/bin/python -m bench.pipeline [--records N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import result, table
from bench.harness import bare_qos1_rate, mosquitto, pipeline, wait_drained
from drivers.gnss.driver import GnssDriver
from drivers.gnss.sim import walk
from edge.clock import Clock
from edge.config import GnssDevice, SerialPort


def nmea(n: int, start_utc: float = 1_790_000_000.0) -> list[bytes]:
    """`n` epochs (RMC+GGA+GSA) of a receiver walking at 10 Hz, one bytes per epoch."""
    epochs = walk(start_utc=start_utc, hz=10.0)
    return [next(epochs) for _ in range(n)]


async def run_pipeline(
    port: int, epochs: list[bytes], *, batch_ms: int, sources: int = 8
) -> tuple[float, float, int, int]:
    """Feed the epochs, 10 at a time, round-robin through `sources` GNSS drivers (each
    read whole: a receiver's stream is split anywhere, but never across receivers).
    Returns wall seconds, CPU seconds, records ingested and messages committed."""
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
            await wait_drained(p)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            rejected = sum(sum(drv.counters.rejected.values()) for drv in drivers)
            if rejected:
                raise RuntimeError(f"the bench's own NMEA was rejected {rejected} times")
            return wall, cpu, p.ingest.records - records0, p.outbox.stats.committed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--bare", type=int, default=50_000, help="bare QoS 1 publishes to time")
    args = ap.parse_args()
    epochs = nmea(args.records)
    with mosquitto() as (port, _):
        bare = bare_qos1_rate(port, args.bare, b"x" * 180)
        wall, cpu, n, msgs = asyncio.run(run_pipeline(port, epochs, batch_ms=250))
        wall_u, _cpu_u, n_unb, msgs_u = asyncio.run(run_pipeline(port, epochs[:30_000], batch_ms=0))
    rate = n / wall
    table(
        "Pipeline: GNSS driver -> signed -> outbox (FULL) -> QoS 1 PUBACK -> deleted",
        [
            ("bare paho QoS 1 publish (180 B, 64 in flight)", f"{bare:,.0f} msgs/s"),
            ("gridedge batched (batch_ms=250, 8 receivers)", f"{rate:,.0f} records/s in {msgs} messages"),
            ("gridedge unbatched (batch_ms=0)", f"{msgs_u / wall_u:,.0f} msgs/s ({n_unb} records)"),
            ("ratio batched records/s / bare msgs/s", f"{rate / bare:.2f}"),
            ("ratio unbatched msgs/s / bare msgs/s", f"{msgs_u / wall_u / bare:.2f}"),
            ("CPU per record (all threads, batched)", f"{cpu / n * 1e6:.1f} us"),
        ],
    )
    result(
        "pipeline",
        records_per_s=rate,
        bare_msgs_per_s=bare,
        ratio=rate / bare,
        unbatched_ratio=msgs_u / wall_u / bare,
        cpu_us_per_record=cpu / n * 1e6,
    )


if __name__ == "__main__":
    main()
