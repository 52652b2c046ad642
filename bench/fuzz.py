"""Fuzz every parser and decoder of untrusted input, coverage-guided (atheris/libFuzzer).

    .venv/bin/pip install atheris     # x86_64 wheels; the gateway itself does not need it
    .venv/bin/python bench/fuzz.py --runs 1000000 --jobs 2

One child process per target (libFuzzer owns its process), seeded with the project's
own small fixtures. A target's contract: any input is handled (an event, a counted
`Rejected`, or the typed refusal its boundary defines: EnvelopeError, ConfigError,
ManifestRejected, BundleError...), never another exception, never slow. Each target
prints its figures; the last line is

    RESULT fuzz inputs=N crashes=C slowest_ms=S

A crash leaves libFuzzer's reproducer (`crash-*`) in --artifacts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(name: str, runs: int, stats: Path, artifacts: Path) -> None:
    import importlib

    atheris: Any = importlib.import_module("atheris")  # optional: only this benchmark needs it

    with atheris.instrument_imports():
        from tests.support.fuzz_targets import targets

        table = targets()
    harness, seeds = table[name]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    state: dict[str, Any] = {"inputs": 0, "slowest_ms": 0.0, "slowest_at": 0, "started": time.monotonic()}

    def save() -> None:
        state["elapsed_s"] = round(time.monotonic() - float(state["started"]), 1)
        stats.write_text(json.dumps(state))

    def one(data: bytes) -> None:
        t = time.perf_counter()
        harness(data)
        ms = (time.perf_counter() - t) * 1000
        state["inputs"] = int(state["inputs"]) + 1
        if ms > float(state["slowest_ms"]):
            state["slowest_ms"], state["slowest_at"] = round(ms, 3), len(data)
            state["slowest_input"] = data.hex()  # to replay it: the harness on bytes.fromhex
        if int(state["inputs"]) % 20_000 == 0:
            save()

    def test_one(data: bytes) -> None:
        one(data)
        if int(state["inputs"]) >= runs:
            save()

    save()
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            "-max_len=2048",
            "-seed=1",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ],
        test_one,
    )
    atheris.Fuzz()


def replay(name: str, hexed: str) -> float:
    """The median of five plain timings of a target's slowest input (ms)."""
    from tests.support.fuzz_targets import targets

    harness, _ = targets()[name]
    data = bytes.fromhex(hexed)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        with contextlib.suppress(Exception):  # a crash is reported by the child, not here
            harness(data)
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times)[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--runs", type=int, default=100_000, help="inputs per target (1,000,000 before a release)"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--targets", help="comma-separated (default: all)")
    ap.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.runs, args.stats, args.artifacts)
        return 0
    names = args.targets.split(",") if args.targets else list(TARGET_NAMES)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    pending: list[str] = list(names)
    running: dict[str, tuple[subprocess.Popen[bytes], Any]] = {}
    results: dict[str, tuple[dict[str, Any], bool]] = {}
    t0 = time.monotonic()
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            cmd = [sys.executable, __file__, "--child", name, "--runs", str(args.runs)]
            cmd += ["--stats", str(work / f"{name}.json"), "--artifacts", str(args.artifacts.resolve())]
            log = open(work / f"{name}.log", "wb")  # noqa: SIM115 (closed when the child ends)
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
        time.sleep(1)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            st = json.loads((work / f"{name}.json").read_text())
            crashed = proc.returncode != 0
            # The slowest time seen is under instrumentation, beside another fuzzer, with
            # the odd GC pause: the input is timed again here, plainly, as the figure.
            st["replayed_ms"] = replay(name, st.get("slowest_input", ""))
            results[name] = (st, crashed)
            print(
                f"{name:14} inputs={st['inputs']:>9} {st['inputs'] / max(st['elapsed_s'], 0.1):>8.0f}/s "
                f"slowest_ms={st['replayed_ms']:.2f} (a {st['slowest_at']}-byte input; "
                f"{st['slowest_ms']:.1f} ms as first seen, instrumented)"
                + (f"  CRASH: see {work / (name + '.log')}" if crashed else ""),
                flush=True,
            )
    inputs = sum(st["inputs"] for st, _ in results.values())
    crashes = sum(1 for _, c in results.values() if c)
    slowest = max(st["replayed_ms"] for st, _ in results.values())
    print(f"{len(results)} targets in {time.monotonic() - t0:.0f} s on {args.jobs} processes")
    print(f"RESULT fuzz inputs={inputs} crashes={crashes} slowest_ms={slowest:.2f}")
    return 1 if crashes else 0


TARGET_NAMES = (
    "nmea_gnss",
    "gpsd_json",
    "ais",
    "dsc",
    "beidou",
    "envelope_cbor",
    "command_cbor",
    "bundle",
    "fw_manifest",
    "ble_profiles",
    "smp_frames",
    "toml_config",
    "verifier_cose",
    "sms_reassembly",
    "compact",
    "modem_lines",
    "gpsd_commands",
    "page_request",
)

if __name__ == "__main__":
    sys.exit(main())
