"""`python -m drivers.ble.sim`: simulated wearables for a gateway (see control.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from drivers.ble.sim.control import load_specs, serve


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m drivers.ble.sim", description=__doc__)
    ap.add_argument("--wearables", type=Path, required=True, help="JSON list of {id, kind, address|irk}")
    ap.add_argument("--hci-port", type=int, default=0, help="TCP port of the HCI server (0: any free)")
    ap.add_argument("--control-port", type=int, default=0, help="TCP port of the control socket")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="sim: %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_specs(args.wearables), args.hci_port, args.control_port))


if __name__ == "__main__":
    main()
