"""A BeiDou terminal on a pty, as the gateway's driver and bearer use it: the card read
at start, one message per card interval and never faster (a restart included), the
signed compact form where the card holds it and the short form where it does not, the
terminal's refusals as causes, its hostile output counted, and a command terminal's
fleet reports relayed, joined to MMSIs and counted in the harbour's recall. Every
sentence the gateway writes is read back by a reader written apart from the project's
(tests/support/beidou_reader.py); signed messages are checked by an independent COSE
library."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tty
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cwt import COSE, COSEKey

from drivers.ais.tracker import VesselTracker
from drivers.beidou.bearer import BeidouBearer
from drivers.beidou.part import BeidouConfig, BeidouDevice, sample_sos, sizes
from drivers.beidou.sim import PtyTerminal, SimTerminal
from drivers.beidou.terminal import BeidouTerminal
from drivers.part import BearerRefused
from floor.compact import pack, read_short
from floor.config import AisConfig, Geofence, SerialPort
from floor.envelope import Signer, kid_of, public_pem
from tests.support.beidou_reader import sends

PLATFORM = "0243561"
BOAT, STRANGER = "300112", "300999"
HARBOUR = Geofence(
    id="harbour",
    polygon=((22.0, 113.0), (22.0, 113.1), (22.1, 113.1), (22.1, 113.0)),
    fleet=(412000001, 412000002),
)


@pytest.fixture
def pty_terminal() -> Iterator[tuple[PtyTerminal, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    server = PtyTerminal(master, SimTerminal(interval_s=2, level=4)).start()
    yield server, os.ttyname(slave)
    server.stop()
    os.close(master)
    os.close(slave)


class Rig:
    def __init__(self, tmp: Path, port: str, protocol: str = "2.1", **bearer: Any) -> None:
        tmp.mkdir(exist_ok=True)
        self.emitted: list[tuple[str, dict[str, Any]]] = []
        self.tracker = VesselTracker(AisConfig(outside_min_interval_s=0), (HARBOUR,))
        cfg = BeidouDevice(
            id="bd",
            source=SerialPort(port=port, baudrate=115200, silence_s=3600.0),
            protocol=protocol,
            cards={BOAT: 412000001},
        )
        self.terminal = BeidouTerminal(cfg, emit=self.emit, tracker=self.tracker, state_dir=tmp)
        self.tmp = tmp
        self.bearer_cfg = BeidouConfig(device="bd", platform_card=PLATFORM, **bearer)
        self.key = Ed25519PrivateKey.generate()
        self.bearer = BeidouBearer(self.bearer_cfg, self.terminal, tmp, self.key.sign)

    def emit(self, kind: str, src: str, data: Any, **_: Any) -> None:
        self.emitted.append((kind, dict(data)))

    def restart_bearer(self) -> None:
        self.bearer = BeidouBearer(self.bearer_cfg, self.terminal, self.tmp, self.key.sign)

    def signed_sos(self, seq: int) -> bytes:
        payload = sample_sos("gw-1") | {"seq": seq}
        return Signer(self.key).sign_bytes(cbor2.dumps(pack(payload)))

    async def run(self, body: Callable[[Rig], Awaitable[None]]) -> None:
        task = asyncio.get_running_loop().create_task(self.terminal.run())
        try:
            async with asyncio.timeout(60):
                await until(self.terminal.ready, 60)
                await body(self)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 (a condition of another thread's making: polled)
            await asyncio.sleep(0.05)


def test_one_message_per_interval_even_across_a_restart(tmp_path: Path, pty_terminal: Any) -> None:
    server, port = pty_terminal
    sim: SimTerminal = server.terminal

    async def body(rig: Rig) -> None:
        assert rig.terminal.card is not None and rig.terminal.card.card == sim.card
        assert rig.terminal.card.interval_s == 2 and rig.terminal.card.max_bytes == 106
        assert await rig.bearer.send("1:1", rig.signed_sos(1), None) == 1
        assert not rig.bearer.ready()
        with pytest.raises(BearerRefused) as refused:
            await rig.bearer.send("1:2", rig.signed_sos(2), None)
        assert refused.value.reason == "interval_not_elapsed"
        rig.restart_bearer()  # what was sent when is on disk: the restart waits as well
        assert not rig.bearer.ready()
        with pytest.raises(BearerRefused):
            await rig.bearer.send("1:2", rig.signed_sos(2), None)
        await until(rig.bearer.ready, 5)
        assert await rig.bearer.send("1:2", rig.signed_sos(2), None) == 1
        assert await rig.bearer.send("1:2", rig.signed_sos(2), None) == 0  # the card has it: not again

    asyncio.run(Rig(tmp_path, port).run(body))
    assert sim.early == 0  # never written before the interval was up
    assert [round(b.at - a.at) >= 2 for a, b in zip(sim.sent, sim.sent[1:], strict=False)] == [True]
    written = sends(bytes(sim.raw))
    assert [s.card for s in written] == [PLATFORM, PLATFORM]
    assert [t.content for t in sim.sent] == [s.content for s in written]


def test_the_longest_form_the_card_holds(tmp_path: Path, pty_terminal: Any) -> None:
    """Signed (COSE) where the card holds it (a BDS-3 card), the short form with a bare
    signature where that fits (a level 4 card), the short form alone on a level 2 card,
    nothing on a level 1 card (a refusal named `too_long`, never a cut message)."""
    server, port = pty_terminal
    sim: SimTerminal = server.terminal
    signed_len, short_len = sizes("gw-1")
    assert short_len <= 51 and short_len + 64 <= 106 < signed_len

    async def level(rig: Rig, n: int, max_bytes: int) -> None:
        sim.level = n
        rig.terminal.card = None  # asked again: a terminal with another card
        await until(lambda: rig.terminal.max_bytes() == max_bytes)
        await until(rig.bearer.ready, 5)

    async def body(rig: Rig) -> None:
        pub = rig.key.public_key()
        await rig.bearer.send("1:7", rig.signed_sos(7), None)
        said, cbor, sig = read_short(sends(bytes(sim.raw))[-1].content)
        assert sig is not None and said["seq"] == 7 and said["who"] == "sos-worker-0042"
        pub.verify(sig, b"gridedge short form 2\0" + cbor)  # raises if it is not the gateway's
        await level(rig, 2, 51)
        await rig.bearer.send("1:8", rig.signed_sos(8), None)
        said, _cbor, sig = read_short(sends(bytes(sim.raw))[-1].content)
        assert sig is None and said == {
            "ep": 2**20,
            "seq": 8,
            "kind": "sos.alarm",
            "who": "sos-worker-0042",
            "lat": 22.12346,
            "lon": 113.65432,
        }
        await level(rig, 1, 13)
        with pytest.raises(BearerRefused) as refused:
            await rig.bearer.send("1:9", rig.signed_sos(9), None)
        assert refused.value.reason == "too_long"
        assert rig.bearer.snapshot()["sent_forms"] == {"signed": 0, "short_signed": 1, "short": 1, "words": 0}

    asyncio.run(Rig(tmp_path, port).run(body))
    assert len(sim.sent) == 2

    async def bds3(rig: Rig) -> None:
        await until(rig.bearer.ready, 5)
        await rig.bearer.send("1:10", rig.signed_sos(10), None)
        sent = sends(bytes(sim.raw))[-1]
        assert sent.command == "TCQ"
        key = COSEKey.from_pem(public_pem(rig.key.public_key()), kid=kid_of(rig.key.public_key()))
        assert cbor2.loads(COSE.new().decode(sent.content, key))[3] == 10  # the compact array's seq

    asyncio.run(Rig(tmp_path / "bds3", port, protocol="4.0").run(bds3))


def test_the_terminals_refusals_are_causes_and_retried_when_allowed(
    tmp_path: Path, pty_terminal: Any
) -> None:
    server, port = pty_terminal
    sim: SimTerminal = server.terminal

    async def body(rig: Rig) -> None:
        sim.signal = False
        with pytest.raises(BearerRefused) as refused:
            await rig.bearer.send("1:1", rig.signed_sos(1), None)
        assert refused.value.reason == "no_signal"
        assert rig.bearer.snapshot()["state"] == "failing" and rig.bearer.snapshot()["cause"] == "no_signal"
        sim.signal = True
        await until(rig.bearer.ready, 5)  # the retry waits for the interval too
        assert await rig.bearer.send("1:1", rig.signed_sos(1), None) == 1
        assert rig.bearer.snapshot()["cause"] is None
        await until(rig.bearer.ready, 5)
        sim.authorised = False
        with pytest.raises(BearerRefused) as refused:
            await rig.bearer.send("1:2", rig.signed_sos(2), None)
        assert refused.value.reason == "not_authorised"
        sim.authorised = True
        sim.last_tx = time.time() + 30  # the terminal's own clock says wait 32 s: honoured
        await until(rig.bearer.ready, 5)
        with pytest.raises(BearerRefused) as refused:
            await rig.bearer.send("1:2", rig.signed_sos(2), None)
        assert refused.value.reason == "interval_not_elapsed"
        assert rig.bearer.next_at >= time.time() + 25
        assert not rig.bearer.ready()

    asyncio.run(Rig(tmp_path, port).run(body))
    assert [s.content for s in sends(bytes(sim.raw))][1] == sim.sent[0].content


def test_the_fleets_reports_are_relayed_and_counted_in_the_recall(tmp_path: Path, pty_terminal: Any) -> None:
    server, port = pty_terminal
    hostile = (
        b"\x00\xff\xfe garbage\r\n$BDDWR,1,300112,,2205.0000,N*00\r\n"
        + SimTerminal.report("notacard", 22.0, 113.0)
        + b"$BDTXR,1,300112,1,,ZZZZ*11\r\n"
        + SimTerminal.message(BOAT, "x")[:12]
        + b"\r\n"
        + b"$" * 3000
        + b"\r\n"
    )

    async def body(rig: Rig) -> None:
        server.inject(hostile)
        server.inject(SimTerminal.report(BOAT, 21.5, 113.5))  # beyond the harbour, beyond AIS range
        server.inject(SimTerminal.report(STRANGER, 21.6, 113.6))
        await until(lambda: len([k for k, _ in rig.emitted if k == "beidou.position"]) == 2)
        outside = rig.tracker.outside()[0]["vessels"]
        assert {"mmsi": 412000001, "lat": 21.5, "lon": 113.5, "state": "outside", "via": "beidou"} in outside
        assert {"mmsi": 412000002, "state": "unheard"} in outside  # reported by neither
        positions = [d for k, d in rig.emitted if k == "beidou.position"]
        assert positions[0] == {"card": BOAT, "mmsi": 412000001, "station": "bd", "lat": 21.5, "lon": 113.5}
        assert "mmsi" not in positions[1] and rig.terminal.snapshot()["unmapped"] == 1
        server.inject(SimTerminal.message(BOAT, "求救 船进水"))
        server.inject(SimTerminal.message(BOAT, "求救 船进水"))
        server.inject(SimTerminal.message(STRANGER, "hello"))
        await until(lambda: any(k == "beidou.message" for k, _ in rig.emitted))
        distress = [d for k, d in rig.emitted if k == "beidou.distress"]
        where = {"lat": 21.5, "lon": 113.5}  # where the boat last reported from
        assert distress == [
            {"card": BOAT, "mmsi": 412000001, "station": "bd", "text": "求救 船进水", **where}
        ]
        snap = rig.terminal.snapshot()
        assert snap["rejected"] and sum(snap["rejected"].values()) >= 4  # counted, never fatal
        rig.terminal.set_cards({STRANGER: 412000002})  # the platform's table replaces the config's
        server.inject(SimTerminal.report(STRANGER, 22.05, 113.05))  # home
        await until(lambda: len([k for k, _ in rig.emitted if k == "beidou.position"]) == 3)
        assert not any(v["mmsi"] == 412000002 for v in rig.tracker.outside()[0]["vessels"])

    asyncio.run(Rig(tmp_path, port).run(body))
    again = BeidouTerminal(
        BeidouDevice(id="bd", source=SerialPort(port=port, baudrate=115200, silence_s=1.0), cards={BOAT: 1}),
        emit=lambda *_a, **_k: None,
        tracker=VesselTracker(AisConfig()),
        state_dir=tmp_path,
    )
    assert again.cards == {STRANGER: 412000002} and again.cards_from == "platform"  # kept across a restart


@pytest.mark.parametrize(
    ("level", "says"),
    [
        (4, "short form with the gateway's signature"),
        (3, "it goes in the short form (39 bytes), unsigned"),
        (1, "not even the short form of an SOS"),
        (0, "level is not set"),
    ],
)
def test_check_says_which_form_an_sos_takes_on_the_card(tmp_path: Path, level: int, says: str) -> None:
    from tests.support.gateway import GatewayProc

    gw = GatewayProc(
        tmp_path / "gw",
        port=1883,
        devices='[[devices]]\nid = "bd"\nkind = "beidou"\nport = "/dev/ttyUSB7"\n',
        extra=f'[beidou]\ndevice = "bd"\nplatform_card = "{PLATFORM}"\nlevel = {level}\n',
    )
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(gw.config)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr  # a warning, not a refusal
    if says is None:
        assert "beidou" not in res.stderr, res.stderr
    else:
        assert "warning: beidou: " in res.stderr and says in res.stderr, res.stderr


def test_a_bearer_naming_no_terminal_is_refused_by_name(tmp_path: Path) -> None:
    from tests.support.gateway import GatewayProc

    gw = GatewayProc(
        tmp_path / "gw", port=1883, extra=f'[beidou]\ndevice = "bd"\nplatform_card = "{PLATFORM}"\n'
    )
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", "-c", str(gw.config)], capture_output=True, text=True
    )
    assert (
        res.returncode != 0 and "beidou.device: 'bd' is not a [[devices]] entry of kind beidou" in res.stderr
    )
