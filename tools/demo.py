"""`gridedge demo`: a local broker, a simulated GNSS receiver on a pty, the gateway, a live view."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from drivers.ais.sim import FLEET, HARBOUR, harbour_tick, sart_active
from drivers.beidou.sim import SimTerminal
from drivers.gnss.sim import sentence, walk
from drivers.modem.pdu import Reassembly, concat_header, decode_text
from drivers.modem.sim import Sent, SimModem
from edge.mqtt import MqttConnection
from floor.compact import read_short, short_to_sign
from floor.envelope import Signer, check_gateway_payload, keyring, private_pem, public_pem, verify
from floor.errors import EdgeError, EnvelopeError
from floor.fsutil import write_private
from floor.messages import Incoming
from tools.verify import Tally

GW_ID = "demo-taishan-001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )


async def _wait_port(port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def _write_key(workdir: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    write_private(workdir / "gateway.key", private_pem(key))
    return key


def _line(
    msg: Incoming,
    keys: dict[bytes, Ed25519PublicKey],
    by_sms: dict[Any, str],
    arrived: set[Any],
    by_beidou: dict[tuple[int, int], str] | None = None,
) -> str:
    try:
        p = check_gateway_payload(verify(msg.payload, keys).payload)
    except EnvelopeError as exc:
        return f"  ✗ {msg.topic}: REJECTED ({exc})"
    ident = (p["gw"], p["ep"][0], p["ep"][1].hex(), p["seq"])
    arrived.add(ident)
    sms_at = by_sms.get(ident)
    recs = p["recs"]
    d = recs[-1]["d"] if recs else {}
    when = dt.datetime.now().strftime("%H:%M:%S")
    if p["kind"] == "gnss.fix":
        what = f"{len(recs)} fix(es), last {d.get('lat', 0):.6f},{d.get('lon', 0):.6f} fix={d.get('fix')}D"
    elif p["kind"] == "ais.position":
        where = f"{d.get('lat')},{d.get('lon')}"
        what = f"{len(recs)} report(s), last MMSI {d.get('mmsi')} at {where} {d.get('sog')} kn"
    elif p["kind"] == "vessels.outside":
        listed = [
            f"{v['mmsi']} {v['state']}{' (BeiDou)' if v.get('via') else ''}" for v in d.get("vessels", [])
        ]
        what = f"{d.get('count')} not in {d.get('geofence')}: {', '.join(listed)}"
    else:
        what = ", ".join(f"{k}={_shown(k, v)}" for k, v in d.items())
    alarm = "  <<< LIFE-SAFETY" if p["prio"] == 0 else ""
    if sms_at is not None:
        alarm += f" (the same message as the SMS at {sms_at}: kept once)"
    bd_at = (by_beidou or {}).get((p["ep"][0], p["seq"]))
    if bd_at is not None:
        arrived.add((p["ep"][0], p["seq"]))
        alarm += f" (the same message as the BeiDou one at {bd_at}: kept once)"
    return f"{when} ✓ seq={p['seq']:<5} prio={p['prio']} {p['kind']:<16} {p['src']:<8} {what}{alarm}"


def _shown(key: str, value: object) -> str:
    """A record's value as a person reads it: a position to 1 m, a speed to 0.1, the rest as is."""
    if isinstance(value, float):
        return f"{value:.5f}" if key in ("lat", "lon") else f"{value:.1f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_shown(k, v)}" for k, v in value.items()) + "}"
    return str(value)


def _summary(kinds: dict[str, int], life_safety: int, copies: int, rejected: int) -> str:
    """What the demo showed, in a few lines, at its end."""
    top = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    return (
        f"gridedge demo: done. {sum(kinds.values())} signed messages verified ({top});\n"
        f"gridedge demo: {life_safety} life-safety, {copies} of them also carried by SMS or BeiDou"
        f" and each kept once; {rejected} rejected."
    )


OUTAGE = (16, 28)  # seconds into the scenario: the broker stops, and starts again
SMS_SOS = 18  # an SOS while the broker is away: it goes by SMS
NO_CELL = 23  # ...then the cell network goes too: the next SOS goes by BeiDou
BEIDOU_REPORT = 5  # a boat of the home fleet, beyond AIS range, reports by BeiDou
TYPHOON = 8  # the platform switches the station to emergency posture
PLATFORM_CARD = "0243561"  # the platform's BeiDou card
BOAT_CARD, BOAT_MMSI = "0300112", 412440301  # a fishing boat's terminal and its MMSI

# A distress alert, nature "sinking", from a boat south of the harbour (IEC 61162-1 $CDDSC).
DSC_DISTRESS = sentence("CDDSC,12,4124401040,12,05,00,0215211248,0610,,,S,") + b"\r\n"


def _pty(stack: contextlib.AsyncExitStack) -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)
    stack.callback(os.close, master)
    stack.callback(os.close, slave)
    return master, slave


class _Broker:
    """The demo's mosquitto, which the scenario stops and starts again (the uplink fails)."""

    def __init__(self, binary: str, conf: Path, port: int) -> None:
        self.binary, self.conf, self.port = binary, conf, port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-c", str(self.conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await _wait_port(self.port)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()  # a clean stop: it saves the sessions it keeps
            await self.proc.wait()
        self.proc = None


async def _spawn(stack: contextlib.AsyncExitStack, *argv: str, log: Path | None = None) -> None:
    """Start a child process that is terminated (and reaped) when the demo ends."""
    out = stack.enter_context(log.open("ab")) if log is not None else subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT)

    async def stop() -> None:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    stack.push_async_callback(stop)


# Each wearable that raises alarms is enrolled with its own event key (docs/ble-profiles.md);
# the demo makes fresh ones each run, as a factory would per device.
KEYS = {"sos-w042": secrets.token_hex(16), "tag-w043": secrets.token_hex(16)}
WEARABLES = (
    '[[devices]]\nid = "sos-w042"\nkind = "sos_button"\nworker = "w-042"\naddress = "F0:00:00:00:00:42"\n'
    f'key = "{KEYS["sos-w042"]}"\n\n'
    '[[devices]]\nid = "cam-w042"\nkind = "body_camera"\nworker = "w-042"\naddress = "F1:00:00:00:00:42"\n\n'
    '[[devices]]\nid = "tag-w043"\nkind = "man_down"\nworker = "w-043"\naddress = "F2:00:00:00:00:43"\n'
    f'key = "{KEYS["tag-w043"]}"\n\n'
)


async def _wearables(stack: contextlib.AsyncExitStack) -> tuple[str, Any, Any]:
    """Simulated SOS button, body camera and a lone worker's man-down tag (bumble) on a
    virtual radio the gateway reaches over HCI."""
    try:
        from drivers.ble.sim.peripherals import SimAir, SimBodyCamera, SimManDownTag, SimSosButton
    except ImportError:
        return "", None, None
    air = SimAir()
    stack.push_async_callback(air.close)
    hci = await air.serve_hci()
    key = {k: bytes.fromhex(v) for k, v in KEYS.items()}
    button = await air.add(SimSosButton("sos-w042", "F0:00:00:00:00:42", key=key["sos-w042"]))
    await air.add(SimBodyCamera("cam-w042", "F1:00:00:00:00:42"))
    tag = await air.add(SimManDownTag("tag-w043", "F2:00:00:00:00:43", key=key["tag-w043"], interval_s=30))
    toml = WEARABLES + (f'[ble]\nbackend = "sim"\n[ble.options]\nhci = "tcp-client:127.0.0.1:{hci}"\n')
    return toml, button, tag


def _fall(tag: Any) -> None:
    from drivers.ble.kinds.man_down import ManDownEventType

    counter, _answered = tag.emit(ManDownEventType.FALL)
    print(f"          ▶ lone worker w-043 falls: tag-w043 reports it (event {counter})", flush=True)


async def _press(button: Any, kind: str) -> None:
    from drivers.ble.profiles import SosEventType

    pressed = time.monotonic()
    counter, answered = button.press(
        SosEventType.LONG_PRESS if kind == "alarm" else SosEventType.TRIPLE_PRESS
    )
    print(f"          ▶ worker w-042 presses SOS ({kind}, event {counter}) on sos-w042", flush=True)
    try:
        at = await asyncio.wait_for(answered, 30)
        ms = (at - pressed) * 1000
        print(f"          ◀ sos-w042 shows 'received' ({ms:.0f} ms after the press: on the gateway's disk)")
    except TimeoutError:
        print("          ◀ sos-w042: no answer yet; it keeps resending until the gateway has it")


SMS_NUMBER = "+8613800138000"  # the platform's SMS gateway (the simulated modem keeps what it is sent)
DUTY_NUMBER = "+8613900139000"  # the duty officer's phone: the alarm in words


class _Sms:
    """The simulated modem on a pty, and the platform's side of the SMS it is handed: the
    signed messages to the platform's number, the words to the duty officer's phone."""

    def __init__(self, master: int, keys: dict[bytes, Ed25519PublicKey], tally: Tally) -> None:
        self.master, self.keys, self.tally = master, keys, tally
        self.modem = SimModem()
        self.read = 0
        self.platform = Reassembly()
        self.duty: dict[tuple[int, int], dict[int, str]] = {}  # (ref, parts) -> part -> text
        self.seen: dict[tuple[str, int, str, int], str] = {}  # (gw, ep, seq) -> when the SMS came

    def on_readable(self) -> None:
        with contextlib.suppress(OSError):
            answer = self.modem.feed(os.read(self.master, 4096))
            if answer:
                os.write(self.master, answer)
        while len(self.modem.sent) > self.read:
            sms = self.modem.sent[self.read]
            self.read += 1
            if sms.number == SMS_NUMBER:
                whole = self.platform.feed(sms.number, sms.user_data)
                if whole is not None:
                    self._signed(whole)
            else:
                self._words(sms)

    def _signed(self, data: bytes) -> None:
        line = self.tally.add_compact(data, self.keys)
        when = dt.datetime.now().strftime("%H:%M:%S")
        if not line["ok"]:
            print(f"{when} ✗ SMS: REJECTED ({line['error']})", flush=True)
            return
        self.seen[(line["gw"], line["ep"][0], line["ep"][1], line["seq"])] = when
        d = line["recs"][-1]["d"]
        what = ", ".join(f"{k}={v}" for k, v in d.items() if k != "fix")
        print(
            f"{when} ✓ seq={line['seq']:<5} prio=0 {line['kind']:<16} {line['src']:<8} {what}"
            f"  <<< BY SMS to {SMS_NUMBER} ({len(data)} bytes, signed): no acknowledgement from the broker",
            flush=True,
        )

    def _words(self, sms: Sent) -> None:
        head = concat_header(sms.user_data)
        ref, total, part = head if head is not None else (0, 1, 1)
        pieces = self.duty.setdefault((ref, total), {})
        pieces[part] = decode_text(sms.dcs, sms.user_data, sms.udl)
        if len(pieces) == total:
            del self.duty[(ref, total)]
            text = "".join(pieces[i] for i in range(1, total + 1))
            when = dt.datetime.now().strftime("%H:%M:%S")
            print(f"{when}   SMS to the duty phone {sms.number}: {text}", flush=True)


class _Beidou:
    """The station's BeiDou command terminal on a pty (simulated), and the platform's side
    of what reaches its card: the short form, its signature checked with the gateway's key."""

    def __init__(self, master: int, key: Ed25519PublicKey) -> None:
        self.master, self.key = master, key
        self.terminal = SimTerminal(card="0243570", interval_s=5, level=4)
        self.read = 0
        self.seen: dict[tuple[int, int], str] = {}  # (ep counter, seq) -> when it came

    def on_readable(self) -> None:
        with contextlib.suppress(OSError):
            answer = self.terminal.feed(os.read(self.master, 4096))
            if answer:
                os.write(self.master, answer)
        while len(self.terminal.sent) > self.read:
            taken = self.terminal.sent[self.read]
            self.read += 1
            if taken.card == PLATFORM_CARD:
                self._platform(taken.content)

    def inject(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, data)

    def _platform(self, data: bytes) -> None:
        when = dt.datetime.now().strftime("%H:%M:%S")
        try:
            said, body, sig = read_short(data)
            if sig is not None:
                self.key.verify(sig, short_to_sign(body))
        except Exception as exc:
            print(f"{when} ✗ BeiDou: REJECTED ({type(exc).__name__})", flush=True)
            return
        self.seen[(said["ep"], said["seq"])] = when
        how = "short form, signed" if sig is not None else "short form, vouched for by the card number"
        print(
            f"{when} ✓ seq={said['seq']:<5} prio=0 {said['kind']:<16} {said['who']:<8} "
            f"at {said.get('lat')},{said.get('lon')}  <<< BY BEIDOU to card {PLATFORM_CARD} "
            f"({len(data)} bytes, {how}): no broker, no cell network",
            flush=True,
        )


def _beidou(stack: contextlib.AsyncExitStack, key: Ed25519PublicKey) -> tuple[_Beidou, str]:
    """The simulated BeiDou terminal, and its device and bearer config."""
    master, slave = _pty(stack)
    bd = _Beidou(master, key)
    loop = asyncio.get_running_loop()
    loop.add_reader(master, bd.on_readable)
    stack.callback(loop.remove_reader, master)
    toml = (
        f'\n[[devices]]\nid = "beidou"\nkind = "beidou"\nport = "{os.ttyname(slave)}"\n'
        f'cards = {{ "{BOAT_CARD}" = {BOAT_MMSI} }}\n'
        f'\n[beidou]\ndevice = "beidou"\nplatform_card = "{PLATFORM_CARD}"\nlevel = 4\nafter_s = 2.0\n'
    )
    return bd, toml


def _write_config(
    wd: Path, port: int, *, gnss: str, dsc: str, ais_port: int, ble_toml: str, sms_toml: str
) -> None:
    polygon = ", ".join(f"[{lat}, {lon}]" for lat, lon in HARBOUR)
    fleet = [*FLEET, BOAT_MMSI, BOAT_MMSI + 1]
    (wd / "gateway.toml").write_text(
        f'[gateway]\nid = "{GW_ID}"\nkey = "gateway.key"\nstate_dir = "state"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nreconnect_max_s = 2.0\n\n[outbox]\nbatch_ms = 250\n\n'
        "[ais]\nmin_interval_s = 6.0\noutside_min_interval_s = 2.0\n\n"
        f'[[geofences]]\nid = "taishan-harbour"\npolygon = [{polygon}]\nfleet = {fleet}\n\n'
        f'[[devices]]\nid = "gnss0"\nkind = "gnss"\nport = "{gnss}"\n'
        "baudrate = 9600\nmin_interval_s = 2.0\nmin_distance_m = 5.0\n\n"
        f'[[devices]]\nid = "ais-mast"\nkind = "ais"\nurl = "udp://127.0.0.1:{ais_port}"\n\n'
        f'[[devices]]\nid = "vhf-dsc"\nkind = "dsc"\nport = "{dsc}"\n\n' + ble_toml + sms_toml
    )


def _intro(wd: Path, port: int, gnss: str, ais_port: int, *, wearables: bool) -> None:
    print(f"gridedge demo: broker 127.0.0.1:{port}, work dir {wd}")
    print(f"gridedge demo: simulated GNSS receiver on {gnss}, AIS receiver on udp:{ais_port},")
    print("gridedge demo: VHF DSC radio and BeiDou command terminal on ptys; a boat leaves the harbour,")
    print(
        f"gridedge demo: a boat beyond AIS range reports by BeiDou at {BEIDOU_REPORT} s, a typhoon switches"
    )
    print(f"gridedge demo: the station to emergency posture at {TYPHOON} s, an AIS-SART goes active at 15 s")
    print("gridedge demo: and a DSC distress comes in at 25 s.")
    if wearables:
        print("gridedge demo: a worker's BLE SOS button and body camera (simulated):", end="")
        print(" SOS at 10 s, cancel at 40 s;")
        print("gridedge demo: a lone worker's man-down tag (simulated) reports a fall at 12 s.")
        print(f"gridedge demo: the MQTT uplink fails at {OUTAGE[0]} s; an SOS at {SMS_SOS} s goes by SMS")
        print(
            f"gridedge demo: (a simulated modem); the cell network goes at {NO_CELL} s and an SOS at "
            f"{NO_CELL + 1} s goes by BeiDou;"
        )
        print(f"gridedge demo: both go by MQTT too once the uplink is back at {OUTAGE[1]} s.")


class _Platform:
    """The platform's command key: the demo's typhoon switches the station to emergency posture."""

    def __init__(self, wd: Path) -> None:
        key = Ed25519PrivateKey.generate()
        self.signer = Signer(key)
        self.pub = wd / "platform-cmd.pub"
        self.pub.write_bytes(public_pem(key.public_key()))

    async def posture(self, port: int) -> None:
        now = int(time.time() * 1000)
        args = {"posture": "emergency", "reason": "台风 typhoon recall", "expires": now + 3_600_000}
        cmd = {
            "v": 1,
            "id": secrets.token_hex(8),
            "to": GW_ID,
            "cseq": now,  # rising from run to run, also in a work dir kept with --dir
            "iat": now,
            "exp": now + 300_000,
            "type": "posture.set",
            "args": args,
        }
        async with MqttConnection(host="127.0.0.1", port=port, client_id="demo-platform") as conn:
            await conn.publish(f"gridedge/v1/{GW_ID}/cmd", self.signer.sign(cmd))
        print("          ▶ typhoon: the platform switches the station to emergency posture", flush=True)


@dataclasses.dataclass
class _Story:
    """What the scenario drives besides the GNSS, AIS and DSC feeds."""

    broker: _Broker
    platform: _Platform
    sms: _Sms
    beidou: _Beidou
    button: Any = None
    tag: Any = None


async def _feed(master: int, dsc_master: int, ais_port: int, story: _Story) -> None:
    """The scenario: one GNSS epoch a second, the harbour's AIS, a SART, a DSC distress,
    a boat heard by BeiDou, the typhoon posture, the wearables, the uplink and cell failing."""
    loop = asyncio.get_running_loop()
    presses: set[asyncio.Task[None]] = set()
    udp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", ais_port)
    )
    try:
        for t, epoch in enumerate(walk(start_utc=dt.datetime.now(dt.UTC).timestamp())):
            await loop.run_in_executor(None, os.write, master, epoch)
            if t % 2 == 0:
                udp.sendto(harbour_tick(t))
            await _beat(t, story, dsc_master, udp)
            if story.button is not None and t in (10, SMS_SOS, NO_CELL + 1, 40):
                press = loop.create_task(_press(story.button, "cancel" if t == 40 else "alarm"))
                presses.add(press)
                press.add_done_callback(presses.discard)
            await asyncio.sleep(1.0)
    finally:
        udp.close()


async def _beat(t: int, story: _Story, dsc_master: int, udp: asyncio.DatagramTransport) -> None:
    """What happens at second `t` of the scenario."""
    loop = asyncio.get_running_loop()
    if t >= 15 and t % 5 == 0:
        udp.sendto(sart_active(t))
    if t == 25:
        await loop.run_in_executor(None, os.write, dsc_master, DSC_DISTRESS)
    if t == BEIDOU_REPORT or (t > BEIDOU_REPORT and t % 30 == BEIDOU_REPORT):
        print(f"          ▶ fishing boat {BOAT_MMSI}, beyond AIS range, reports by BeiDou", flush=True)
        story.beidou.inject(SimTerminal.report(BOAT_CARD, 21.62 - t * 0.0005, 112.95))
    if t == TYPHOON:
        with contextlib.suppress(EdgeError, OSError):
            await story.platform.posture(story.broker.port)
    if story.tag is not None and t == 12:
        _fall(story.tag)
    if t == OUTAGE[0]:
        print("          ▶ the MQTT uplink fails (the demo stops its broker)", flush=True)
        await story.broker.stop()
    if t == NO_CELL:
        print("          ▶ the cell network is gone too (the modem loses its network)", flush=True)
        story.sms.modem.registered = False
    if t == OUTAGE[1]:
        print("          ▶ the MQTT uplink is back", flush=True)
        await story.broker.start()


async def _view(port: int, show: Callable[[Incoming], None]) -> None:
    """The platform's live view: a persistent session, reconnected while the broker is away."""
    first = True
    while True:
        try:
            async with MqttConnection(
                host="127.0.0.1", port=port, client_id="demo-view", clean_session=False, on_message=show
            ) as view:
                await view.subscribe(["gridedge/v1/+/up/#", "gridedge/v1/+/status"])
                first = False
                await view.closed
        except EdgeError:
            if first:
                raise
        await asyncio.sleep(0.2)


COPIES_WAIT_S = 30.0  # at the end, how long the demo waits for the MQTT copies of what went by SMS


async def _await_copies(by_sms: dict[Any, str], arrived: set[Any]) -> None:
    """A demo that ends on time still shows each message sent by SMS arrive by MQTT too:
    the gateway keeps it and sends it once the uplink is back, however late in the scenario
    that is."""
    deadline = time.monotonic() + COPIES_WAIT_S
    announced = False
    while missing := by_sms.keys() - arrived:
        if time.monotonic() > deadline:
            print(f"gridedge demo: {len(missing)} message(s) sent by SMS not yet seen by MQTT; stopping")
            return
        if not announced:
            print(f"gridedge demo: waiting for the MQTT copy of {len(missing)} message(s) sent by SMS")
            announced = True
        await asyncio.sleep(0.2)


async def _start_broker(stack: contextlib.AsyncExitStack, binary: str, wd: Path) -> _Broker:
    port = _free_port()
    (wd / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        f"persistence true\npersistence_location {wd}/\n"
    )
    broker = _Broker(binary, wd / "mosquitto.conf", port)
    await broker.start()
    stack.push_async_callback(broker.stop)
    return broker


def _modem(stack: contextlib.AsyncExitStack, keys: dict[bytes, Ed25519PublicKey]) -> tuple[_Sms, str]:
    """The simulated modem the SMS bearer uses, and that bearer's config."""
    modem_master, modem_slave = _pty(stack)
    sms = _Sms(modem_master, keys, Tally())
    loop = asyncio.get_running_loop()
    loop.add_reader(modem_master, sms.on_readable)
    stack.callback(loop.remove_reader, modem_master)
    toml = (
        f'\n[sms]\nport = "{os.ttyname(modem_slave)}"\nnumbers = ["{SMS_NUMBER}"]\n'
        f'duty_numbers = ["{DUTY_NUMBER}"]\nafter_s = 2.0\n'
        '[alarms]\nlanguage = "en"\n[alarms.names]\n"w-042" = "Li Wei"\n'
    )
    return sms, toml


async def run_demo(*, duration: float | None = None, workdir: Path | None = None) -> int:
    binary = _mosquitto()
    if binary is None:
        print("gridedge demo: mosquitto is not installed (sudo apt-get install mosquitto)", file=sys.stderr)
        return 1
    async with contextlib.AsyncExitStack() as stack:
        wd = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gridedge-demo-")))
        wd.mkdir(parents=True, exist_ok=True)
        broker = await _start_broker(stack, binary, wd)
        master, slave = _pty(stack)
        dsc_master, dsc_slave = _pty(stack)
        ais_port = _free_port()
        gw_key = _write_key(wd).public_key()
        keys = keyring(gw_key)
        sms, sms_toml = _modem(stack, keys)
        beidou, beidou_toml = _beidou(stack, gw_key)
        platform = _Platform(wd)
        web_port = _free_port()
        ble_toml, button, tag = await _wearables(stack)
        _write_config(
            wd,
            broker.port,
            gnss=os.ttyname(slave),
            dsc=os.ttyname(dsc_slave),
            ais_port=ais_port,
            ble_toml=ble_toml,
            sms_toml=sms_toml
            + beidou_toml
            + f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n'
            + f'\n[trust]\ncommand_key = "{platform.pub}"\n',
        )
        _intro(wd, broker.port, os.ttyname(slave), ais_port, wearables=button is not None)
        print(
            f"gridedge demo: status page http://127.0.0.1:{web_port}/ (中文: ?lang=zh_CN), metrics /metrics"
        )
        print("gridedge demo: Ctrl-C to stop.\n")
        gateway = (sys.executable, "-m", "tools.cli", "run", "-c", str(wd / "gateway.toml"))
        await _spawn(stack, *gateway, log=wd / "gateway.log")

        arrived: set[Any] = set()

        kinds: dict[str, int] = {}
        tally = {"life_safety": 0, "rejected": 0}

        def show(msg: Incoming) -> None:
            line = _line(msg, keys, sms.seen, arrived, beidou.seen)
            print(line, flush=True)
            if " ✗ " in line:
                tally["rejected"] += 1
                return
            kind = line.split()[4] if len(line.split()) > 4 else "?"
            kinds[kind] = kinds.get(kind, 0) + 1
            tally["life_safety"] += "LIFE-SAFETY" in line

        view = asyncio.ensure_future(_view(broker.port, show))
        story = _Story(broker, platform, sms, beidou, button, tag)
        feeder = asyncio.ensure_future(_feed(master, dsc_master, ais_port, story))
        try:
            await asyncio.wait((feeder, view), timeout=duration, return_when=asyncio.FIRST_COMPLETED)
            if view.done() and view.exception() is not None:
                print(f"gridedge demo: {view.exception()}", file=sys.stderr)
                return 1
            await _await_copies(sms.seen | beidou.seen, arrived)
            copies = len([x for x in sms.seen | beidou.seen if x in arrived])
            print(_summary(kinds, tally["life_safety"], copies, tally["rejected"]), flush=True)
        finally:
            for task in (feeder, view):
                task.cancel()
            await asyncio.gather(feeder, view, return_exceptions=True)  # ours still propagates
    return 0
