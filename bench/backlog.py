"""1,000,000 records buffered while the broker is down, then drained: drain rate, peak
RSS, disk bytes per record, and the latency of live SOS and live telemetry during the drain.

    .venv/bin/python -m bench.backlog [--records N] [--rounds R]

Each round buffers and drains a fresh outbox; the latencies of all rounds are pooled
so that p99 rests on a few hundred alarms, not on the worst two of one short drain.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import peak_rss_mb, result, table
from bench.harness import Pipeline, disk_bytes, drained_below, free_port, mosquitto, pipeline, wait_drained
from floor.clock import Clock

SOURCES = 50  # vessels/workers feeding telemetry
# An alarm every 20 ms during each drain (~1.5 s here): ~75 alarms a round.
SOS_EVERY_S = 0.02
RECORD = {
    "lat": 21.91234,
    "lon": 112.81234,
    "alt": 12.3,
    "fix": 3,
    "sats": 11,
    "hdop": 0.8,
    "speed": 1.42,
    "course": 93.1,
    "utc": 1_790_000_000_000,
}


async def fill(p: Pipeline, n: int) -> float:
    """Submit n telemetry records as fast as the gateway takes them; seconds taken."""
    clock = Clock(synced=True)
    t0 = time.perf_counter()
    for i in range(n):
        p.ingest.submit("gnss.fix", f"gnss{i % SOURCES}", RECORD, stamp=clock.now())
        if i % 200 == 0:
            await p.outbox.room()  # backpressure, as the drivers' read loops do
            await asyncio.sleep(0)
    p.ingest.flush_all()
    await p.outbox.flush()  # commit what is still queued (waits for a flush in progress)
    return time.perf_counter() - t0


commit_ms: list[float] = []


async def live_probe(p: Pipeline, kind: str, period_s: float, out: list[float], stop: asyncio.Event) -> None:
    """Send one live message every period; record submit-to-PUBACK latency (ms)."""
    sent: dict[int, float] = {}
    previous = p.publisher.on_ack

    def on_ack(seq: int) -> None:
        t = sent.pop(seq, None)
        if t is not None:
            out.append((time.perf_counter() - t) * 1000)
        if previous is not None:
            previous(seq)

    p.publisher.on_ack = on_ack
    clock = Clock(synced=True)
    while not stop.is_set():
        t = time.perf_counter()
        if kind == "sos.alarm":
            seq = await p.ingest.emit(
                kind, "sos-probe", {"device": "sos1", "worker": "w1", "counter": len(out)}
            )
            commit_ms.append((time.perf_counter() - t) * 1000)
            if seq is not None:
                sent[seq] = t
        else:
            # Unbatched live telemetry: its own message, so its seq is known at commit.
            fut = p.outbox.submit(
                p.ingest.pending(kind, "live-probe", [{"tb": 0, "tu": None, "d": RECORD}], clock.now().tq)
            )
            sent[await fut] = t
        await asyncio.sleep(period_s)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@dataclass
class Round:
    messages: int
    fill_s: float
    drain_s: float
    disk: int
    sos: list[float]
    live: list[float]


async def run(n: int) -> Round:
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        state = Path(d)
        async with pipeline(state, port, batch_ms=250) as p:  # the broker is not there yet
            fill_s = await fill(p, n)
            disk = disk_bytes(state)
            messages = p.outbox.depth()
            with mosquitto(port):
                await asyncio.wait_for(p.publisher.up.wait(), 30)
                sos: list[float] = []
                live: list[float] = []
                stop = asyncio.Event()
                probes = [
                    asyncio.create_task(live_probe(p, "sos.alarm", SOS_EVERY_S, sos, stop)),
                    asyncio.create_task(live_probe(p, "gnss.fix", 0.05, live, stop)),
                ]
                t0 = time.perf_counter()
                await drained_below(p, 2)  # the backlog (probes keep a message or two in flight)
                drain_s = time.perf_counter() - t0
                stop.set()
                await asyncio.gather(*probes)
                await wait_drained(p)
    return Round(messages, fill_s, drain_s, disk, sos, live)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rounds = [asyncio.run(run(args.records)) for _ in range(args.rounds)]
    n = args.records * len(rounds)
    sos = [x for r in rounds for x in r.sos]
    live = [x for r in rounds for x in r.live]
    drain_s = sum(r.drain_s for r in rounds)
    fill_s = sum(r.fill_s for r in rounds)
    disk = max(r.disk for r in rounds)
    per_round = ", ".join(f"{pct(r.sos, 0.99):.1f}" for r in rounds)
    table(
        f"Backlog: {args.records:,} records buffered with the broker down, then drained "
        f"({len(rounds)} rounds, latencies pooled)",
        [
            (
                "buffered (each round)",
                f"{args.records:,} records in {int(rounds[0].messages):,} messages, "
                f"{n / fill_s:,.0f} records/s",
            ),
            (
                "disk (outbox.sqlite + WAL)",
                f"{disk / 1e6:.1f} MB, {disk / args.records:.0f} bytes/record",
            ),
            ("drain", f"{drain_s / len(rounds):.1f} s a round, {n / drain_s:,.0f} records/s"),
            (
                "live SOS submit->PUBACK during drain",
                f"p50 {pct(sos, 0.5):.1f} ms, p99 {pct(sos, 0.99):.1f} ms ({len(sos)} alarms; "
                f"p99 per round {per_round})",
            ),
            (
                "live telemetry submit->PUBACK",
                f"p50 {pct(live, 0.5):.1f} ms, p99 {pct(live, 0.99):.1f} ms ({len(live)} messages)",
            ),
            (
                "live SOS submit->commit (fsync)",
                f"p50 {pct(commit_ms, 0.5):.1f} ms, p99 {pct(commit_ms, 0.99):.1f} ms",
            ),
            ("peak RSS of the process", f"{peak_rss_mb():.1f} MB"),
        ],
    )
    result(
        "backlog",
        drain_records_per_s=n / drain_s,
        peak_rss_mb=peak_rss_mb(),
        bytes_per_record=disk / args.records,
        sos_p99_ms=pct(sos, 0.99),
        live_p99_ms=pct(live, 0.99),
    )


if __name__ == "__main__":
    main()
