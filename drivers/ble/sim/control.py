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
        op = str(req.get("op"))
        if op == "state":
            return {"wearables": {k: w.state() for k, w in self.air.wearables.items()}}
        w = self._get(req)
        do = getattr(self, "_op_" + op, None) if op.isidentifier() else None
        if do is None:
            raise ValueError(f"unknown op {op!r} for {w.id}")
        result: dict[str, Any] = await do(w, req)
        return result

    def _counted(self, w: SimWearable, counter: int, fut: asyncio.Future[float]) -> dict[str, Any]:
        self.presses[(w.id, counter)] = (time.monotonic(), fut)
        return {"counter": counter}

    async def _op_press(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(w, SimSosButton):
            raise ValueError(f"{w.id} has no button")
        return self._counted(w, *w.press(PRESSES[str(req.get("type", "long"))]))

    async def _op_tag(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(w, SimManDownTag):
            raise ValueError(f"{w.id} is not a man-down tag")
        return self._counted(w, *w.emit(TAG_EVENTS[str(req.get("type", "fall"))]))

    async def _op_checkins(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(w, SimManDownTag):
            raise ValueError(f"{w.id} is not a man-down tag")
        w.checking_in = bool(req.get("on", True))
        return {}

    async def _op_wait(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        at, fut = self.presses[(w.id, int(req["counter"]))]
        answered = await asyncio.wait_for(asyncio.shield(fut), float(req.get("timeout", 10)))
        return {"answered_ms": (answered - at) * 1000.0}

    async def _op_connected(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        return {"connected": await w.wait_connected(float(req.get("timeout", 10)))}

    async def _op_mute(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        w.set_muted(True)
        return {}

    async def _op_unmute(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        w.set_muted(False)
        return {}

    async def _op_drop(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        await w.drop_link()
        return {}

    async def _op_away(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        await w.away()
        return {}

    async def _op_back(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        await w.back()
        return {}

    async def _op_reboot(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(w, SimSosButton):
            raise ValueError(f"{w.id} has no button to reboot")
        w.reboot()
        return {}

    async def _op_battery(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        await w.set_battery(int(req["pct"]))
        return {}

    async def _op_mark(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(w, SimBodyCamera):
            raise ValueError(f"{w.id} is not a camera")
        return {"sha256": (await w.mark()).hex()}

    async def _op_replay(self, w: SimWearable, req: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(w, SimSosButton):
            raise ValueError(f"{w.id} has no button")
        await w.replay(bytes.fromhex(str(req["hex"])))
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
