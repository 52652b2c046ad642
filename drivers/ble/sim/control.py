"""Run simulated wearables in their own process, driven over a JSON-lines control socket.

    python -m drivers.ble.sim --wearables wearables.json [--hci-port N] [--control-port N]

prints `READY hci=<port> control=<port>` once the air is up. A gateway configured with
`[ble] backend = "sim"` and
`[ble.options] hci = "tcp-client:127.0.0.1:<port>"` then sees the wearables over HCI.
The wearables outlive the gateway (kill it and they advertise again), as real ones do.

Control requests (one JSON object per line, one reply line each):
`press` {device, type: long|short|triple|test} -> {counter}; `tag` {device, type:
fall|no_motion|ok|test|checkin} -> {counter} (a man-down tag); `checkins` {device, on}
(a tag that stops checking in); `wait` {device, counter, timeout} -> {answered_ms} once
the gateway's feedback for that event arrived;
`state`; `mute`/`unmute`/`drop`/`reboot` {device}; `battery` {device, pct};
`mark` {device}; `replay` {device, hex}; `connected` {device, timeout}.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

from drivers.ble import profiles as p
from drivers.ble.kinds import man_down as md
from drivers.ble.sim.peripherals import SimAir, SimBodyCamera, SimManDownTag, SimSosButton, SimWearable
from drivers.ble.sim.smp_server import SimSmpServer

TAG_EVENTS = {
    "fall": md.ManDownEventType.FALL,
    "no_motion": md.ManDownEventType.NO_MOTION,
    "ok": md.ManDownEventType.OK,
    "test": md.ManDownEventType.TEST,
    "checkin": md.ManDownEventType.CHECK_IN,
}
PRESSES = {
    "long": p.SosEventType.LONG_PRESS,
    "short": p.SosEventType.PRESS,
    "triple": p.SosEventType.TRIPLE_PRESS,
    "test": p.SosEventType.TEST,
}


def wearable(spec: dict[str, Any]) -> SimWearable:
    kind = spec.get("kind", "sos_button")
    irk = bytes.fromhex(spec["irk"]) if spec.get("irk") else None
    smp = spec.get("smp")
    server = SimSmpServer(**smp) if isinstance(smp, dict) else None
    common: dict[str, Any] = {"id": spec["id"], "address": spec["address"], "irk": irk, "smp": server}
    # the key it was enrolled with ("key"); a forger's "sim_key" is a key of its own
    hexkey = spec.get("sim_key", spec.get("key"))
    key = bytes.fromhex(hexkey) if hexkey else None
    if kind == "sos_button":
        return SimSosButton(**common, key=key)
    if kind == "body_camera":
        return SimBodyCamera(**common, screen=bool(spec.get("screen", True)))
    if kind == "man_down":
        return SimManDownTag(**common, key=key, interval_s=int(spec.get("interval_s", 60)))
    raise ValueError(f"unknown simulated wearable kind {kind!r}")


class Controller:
    def __init__(self, air: SimAir) -> None:
        self.air = air
        self.presses: dict[tuple[str, int], tuple[float, asyncio.Future[float]]] = {}

    def _get(self, req: dict[str, Any]) -> SimWearable:
        w = self.air.wearables.get(str(req.get("device")))
        if w is None:
            raise KeyError(f"no simulated wearable {req.get('device')!r}")
        return w

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "state":
            return {"wearables": {k: w.state() for k, w in self.air.wearables.items()}}
        w = self._get(req)
        if op == "press":
            if not isinstance(w, SimSosButton):
                raise ValueError(f"{w.id} has no button")
            counter, fut = w.press(PRESSES[str(req.get("type", "long"))])
            self.presses[(w.id, counter)] = (time.monotonic(), fut)
            return {"counter": counter}
        if op == "tag":
            if not isinstance(w, SimManDownTag):
                raise ValueError(f"{w.id} is not a man-down tag")
            counter, fut = w.emit(TAG_EVENTS[str(req.get("type", "fall"))])
            self.presses[(w.id, counter)] = (time.monotonic(), fut)
            return {"counter": counter}
        if op == "checkins":
            if not isinstance(w, SimManDownTag):
                raise ValueError(f"{w.id} is not a man-down tag")
            w.checking_in = bool(req.get("on", True))
            return {}
        if op == "wait":
            at, fut = self.presses[(w.id, int(req["counter"]))]
            answered = await asyncio.wait_for(asyncio.shield(fut), float(req.get("timeout", 10)))
            return {"answered_ms": (answered - at) * 1000.0}
        if op == "connected":
            return {"connected": await w.wait_connected(float(req.get("timeout", 10)))}
        if op in ("mute", "unmute"):
            w.set_muted(op == "mute")
        elif op == "drop":
            await w.drop_link()
        elif op == "away":
            await w.away()
        elif op == "back":
            await w.back()
        elif op == "reboot" and isinstance(w, SimSosButton):
            w.reboot()
        elif op == "battery":
            await w.set_battery(int(req["pct"]))
        elif op == "mark" and isinstance(w, SimBodyCamera):
            return {"sha256": (await w.mark()).hex()}
        elif op == "replay" and isinstance(w, SimSosButton):
            await w.replay(bytes.fromhex(str(req["hex"])))
        else:
            raise ValueError(f"unknown op {op!r} for {w.id}")
        return {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = {"ok": True, **await self.handle(json.loads(line))}
                except (KeyError, ValueError, TypeError, TimeoutError) as exc:
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()


async def serve(specs: list[dict[str, Any]], hci_port: int = 0, control_port: int = 0) -> None:
    air = SimAir()
    for spec in specs:
        await air.add(wearable(spec))
    hci = await air.serve_hci("127.0.0.1", hci_port)
    ctl = Controller(air)
    server = await asyncio.start_server(ctl.serve, "127.0.0.1", control_port)
    port = server.sockets[0].getsockname()[1]
    print(f"READY hci={hci} control={port}", flush=True)
    async with server:
        await server.serve_forever()


class SimClient:
    """A blocking client for the control socket (tests, the demo, the benchmark)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rwb")

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self.file.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.file.flush()
        reply: dict[str, Any] = json.loads(self.file.readline())
        if not reply.get("ok"):
            raise RuntimeError(f"sim {op}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def load_specs(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return list(data["wearables"] if isinstance(data, dict) else data)
