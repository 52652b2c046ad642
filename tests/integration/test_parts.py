"""Parts of the test's own, registered at run time (a stream device kind and a bearer):
the config takes their kind and section, the gateway builds and runs them, and they show
in the status, the status table, the page (in Chromium) and the metrics, with no other
file knowing them. If any of those named the
parts it knows, this part would be missing there."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from playwright.sync_api import sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from drivers.base import StreamDriver
from drivers.part import BearerPart, Device, DeviceHost, StreamPart
from drivers.parts import PARTS, parse_config
from edge.app import Gateway
from edge.health import read_status
from floor.config import BearerConfig, DeviceConfig, Section, bearer_basics, source
from tests.integration.test_status_page import CHROMIUM, get
from tests.support.broker import Mosquitto, free_port
from tests.support.gateway import write_keypair
from tools.provision import columns
from tools.status_table import render


@dataclass(frozen=True, slots=True, kw_only=True)
class TallyDevice(DeviceConfig):
    kind: Literal["tally"] = "tally"
    every: int = 1  # publish every n-th line


class TallyDriver(StreamDriver):
    """Counts lines; every `every`-th becomes a `tally.count` record."""

    kind = "tally"

    def __init__(self, cfg: TallyDevice, host: DeviceHost) -> None:
        super().__init__(cfg.id, cfg.source, emit=host.emit, room=host.room, tap=host.tap)
        self.every = cfg.every
        self.lines = 0

    def _new_stream(self) -> None:
        pass

    def _feed(self, data: bytes, now: int) -> None:
        for _line in data.splitlines():
            self.lines += 1
            self.counters.events += 1
            if self.lines % self.every == 0:
                self._publish("tally.count", {"lines": self.lines})

    def _flush(self, now: int) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "lines": self.lines}


def _parse(sec: Section, dev_id: str) -> TallyDevice:
    return TallyDevice(
        id=dev_id,
        source=source(sec, default_baud=9600, default_silence=60.0),
        every=sec.integer("every", 1, lo=1),
    )


def _build(cfg: TallyDevice, host: DeviceHost) -> Device:
    return TallyDriver(cfg, host)


TALLY = StreamPart(name="tally", config=TallyDevice, parse=_parse, build=_build, columns=("url", "every"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PigeonConfig(BearerConfig):
    """A bearer of the test's own: its section `[pigeon]`, with a key of its own."""

    name: ClassVar[str] = "pigeon"
    loft: str = ""
    per_flight: int = 1

    @property
    def per_hour(self) -> int:
        return 12 * self.per_flight


class Pigeon:
    name = "pigeon"

    def __init__(self, cfg: PigeonConfig) -> None:
        self.cfg = cfg
        self.flown: list[str] = []

    def ready(self) -> bool:
        return True

    def cost(self, data: bytes, text: str | None) -> int:
        return self.cfg.per_flight

    async def send(self, key: str, data: bytes, text: str | None) -> int:
        self.flown.append(key)
        return self.cfg.per_flight

    async def tell(self, key: str, text: str) -> int:
        return 0

    async def run(self) -> None:
        await asyncio.Event().wait()

    def snapshot(self) -> dict[str, Any]:
        return {"state": "ready", "loft": self.cfg.loft, "flown": len(self.flown)}


def _parse_pigeon(sec: Section) -> PigeonConfig:
    d = PigeonConfig()
    cfg = PigeonConfig(
        **bearer_basics(sec, d), loft=sec.text("loft"), per_flight=sec.integer("per_flight", 1, lo=1)
    )
    sec.done()
    return cfg


PIGEON = BearerPart(name="pigeon", config=PigeonConfig, parse=_parse_pigeon, build=lambda c, _h: Pigeon(c))
PARTS_WITH_TALLY = PARTS.with_parts(TALLY, PIGEON)


@dataclass
class Running:
    gw: Gateway
    udp: int
    web: str
    socket: Path


@pytest.fixture
def running(broker: Mosquitto, tmp_path: Path) -> Iterator[Running]:
    key, _pub = write_keypair(tmp_path)
    udp, web = free_port(socket.SOCK_DGRAM), free_port()
    text = (
        f'[gateway]\nid = "gw-parts"\nkey = "{key}"\nstate_dir = "{tmp_path / "state"}"\n'
        f"[mqtt]\nport = {broker.port}\n"
        f'[web]\nlisten = "127.0.0.1:{web}"\n'
        f'[[devices]]\nid = "tally-1"\nkind = "tally"\nurl = "udp://127.0.0.1:{udp}"\nevery = 2\n'
        '[pigeon]\nloft = "harbour"\nper_flight = 3\n'
    )
    cfg = parse_config(text, parts=PARTS_WITH_TALLY)
    gw = Gateway(cfg, parts=PARTS_WITH_TALLY)
    loop = asyncio.new_event_loop()
    task = loop.create_task(gw.run())

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # how the fixture stops it
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield Running(gw, udp, f"http://127.0.0.1:{web}", cfg.gateway.status_socket)
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(20)
        loop.close()


def _status(r: Running, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc = read_status(r.socket)
        except OSError:
            doc = None
        if doc is not None and pred(doc):
            return doc
        time.sleep(0.1)
    raise AssertionError("the status never showed it")


def test_a_part_of_its_own_is_configured_run_and_shown_everywhere(running: Running) -> None:
    r = running
    cfg = r.gw.cfg
    assert [type(d) for d in cfg.devices] == [TallyDevice] and cfg.devices[0].every == 2  # type: ignore[attr-defined]
    assert "tally" not in PARTS.devices  # registered for this test only
    _status(r, lambda d: (d["devices"] or {}).get("tally-1", {}).get("state") == "connected")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"one\ntwo\nthree\nfour\n", ("127.0.0.1", r.udp))
    doc = _status(r, lambda d: d["devices"]["tally-1"]["lines"] == 4)
    entry = doc["devices"]["tally-1"]
    assert entry["kind"] == "tally" and entry["published"] == 2 and entry["events"] == 4
    # gridedge status
    table = render(doc, "en")
    assert any(line.split()[:2] == ["tally-1", "connected"] for line in table.splitlines()), table
    # the metrics
    status, text = get(r.web + "/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("gridedge_device_up", (("device", "tally-1"),))] == 1
    # the page, drawn by a real browser
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(r.web + "/")
            row = page.wait_for_selector('#devices tr[data-device="tally-1"] [data-state="connected"]')
            assert row is not None
            assert (
                page.wait_for_selector('#devices tr[data-device="pigeon"] [data-state="ready"]') is not None
            )
        finally:
            browser.close()
    # the bearer of the test's own: configured, run, shown
    bearer = doc["bearers"]["pigeon"]
    assert bearer["loft"] == "harbour" and bearer["state"] == "ready" and bearer["per_hour"] == 36
    assert any(line.startswith("Bearer pigeon") for line in table.splitlines()), table
    assert samples[("gridedge_bearer_ready", (("bearer", "pigeon"),))] == 1
    # the stations sheet of a fleet takes the part's columns
    assert "every" in columns(PARTS_WITH_TALLY) and "every" not in columns()


def test_the_registry_finds_every_part_module_and_nothing_else() -> None:
    """Each drivers/<part>/part.py is found, and a kind is only what some module says."""
    found = sorted(Path(__file__).resolve().parents[2].glob("drivers/*/part.py"))
    names = {p.parent.name for p in found}
    assert {"gnss", "ais", "dsc", "modem", "beidou"} <= names
    assert set(PARTS.devices) == {"gnss", "ais", "dsc", "beidou"} and set(PARTS.bearers) == {"sms", "beidou"}
    assert "pigeon" not in PARTS.bearers and "pigeon" in PARTS_WITH_TALLY.bearers
    assert set(PARTS.wearables) == {"sos_button", "body_camera", "man_down"}
