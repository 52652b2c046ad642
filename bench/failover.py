"""Press to the first SMS, whatever way the uplink fails: for each way (a clean cut, a
black hole, a broker that never acknowledges, a broker never reached, a gateway restarted
in the middle of an outage), a real gateway process, a simulated SOS button and modem, a
real mosquitto behind a fault proxy; `--presses` presses each. Prints p50/p99 per way.

    .venv/bin/python -m bench.failover [--presses 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import result, table
from tests.support.broker import Mosquitto
from tests.support.failover import FAILOVER_S, MODES, measure


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presses", type=int, default=10)
    args = ap.parse_args()
    figures: dict[str, float] = {}
    rows = []
    for mode in MODES:
        with tempfile.TemporaryDirectory() as d:
            broker = Mosquitto(Path(d) / "broker")
            broker.start()
            try:
                got = measure(broker, Path(d), mode, args.presses, on=lambda _s: None)
            finally:
                broker.stop()
        p50, p99 = statistics.median(got), pct(got, 0.99)
        rows.append((mode, f"p50 {p50:.2f} s  p99 {p99:.2f} s  ({len(got)} presses)"))
        figures[f"{mode}_p50_s"], figures[f"{mode}_p99_s"] = p50, p99
    table(f"press to the first AT+CMGS, failover_s = {FAILOVER_S}", rows)
    result("failover", failover_s=FAILOVER_S, **figures)


if __name__ == "__main__":
    main()
