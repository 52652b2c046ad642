"""The fuzz targets: every parser and decoder of untrusted input, as a harness that takes
bytes and either handles them or raises (a finding). `bench/fuzz.py` runs them
coverage-guided for a million inputs each; `tests/attacks/test_fuzz_targets.py` keeps a
short Hypothesis run of each in the suite.

A target's contract: any input is handled (an event, a counted `Rejected`, or the typed
refusal its boundary defines: EnvelopeError, ConfigError, ManifestRejected, BundleError,
an SMP link error...), never another exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
Harness = Callable[[bytes], object]


Targets = dict[str, tuple[Harness, list[bytes]]]
KEY16 = bytes(range(16))


def targets() -> Targets:
    """name -> (harness, seeds). Import-time work is kept here, so a fuzzer can instrument it."""
    return {
        **_stream_targets(),
        **_signed_targets(),
        **_ble_targets(),
        **_smp_targets(),
        **_platform_targets(),
        **_listener_targets(),
    }


def _stream_targets() -> Targets:
    """The serial and network devices' parsers."""
    from drivers.ais.parse import AisParser
    from drivers.ais.tracker import VesselTracker
    from drivers.beidou.parse import BdParser
    from drivers.dsc.parse import DscParser
    from drivers.gnss.parse import NmeaParser
    from drivers.gnss.sim import sentence
    from floor.config import AisConfig

    def nmea(data: bytes) -> None:
        parser = NmeaParser()
        parser.feed(data, now=0)
        parser.flush()

    def ais(data: bytes) -> None:
        parser, tracker = AisParser(), VesselTracker(AisConfig())
        for ev in parser.feed(data, now=0) + parser.expire(10**9):
            if not hasattr(ev, "reason"):
                tracker.offer(ev, "fuzz")

    def dsc(data: bytes) -> None:
        parser = DscParser()
        parser.feed(data, now=0)
        parser.poll(10**6)
        parser.flush()

    def beidou(data: bytes) -> None:
        BdParser().feed(data)

    gnss_seed = b"".join(
        sentence(s)
        for s in (
            "GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W",
            "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
            "GNGSA,A,3,01,02,03,,,,,,,,,,1.5,0.9,1.2",
            "GPZDA,123519.00,23,03,1994,00,00",
        )
    )
    gpsd_seed = (
        b'{"class":"TPV","mode":3,"time":"2026-11-30T01:02:03.000Z","lat":21.9,"lon":112.8,"alt":5.0,'
        b'"speed":1.2,"track":90.0}\r\n'
    )
    ais_seed = (
        b"!AIVDM,1,1,,A,15M67FC000G?ufbE`FepT@3n00Sa,0*5C\r\n"
        b"!AIVDM,2,1,3,B,55P5TL01VIaAL@7WKO@mBplU@<PDhh000000001S;AJ::4A80?4i@E53,0*3E\r\n"
        b"!AIVDM,2,2,3,B,1@0000000000000,2*55\r\n"
    )
    dsc_seed = (
        b"$CDDSC,12,3380400790,12,06,00,1423108312,2019,,,S,E*6A\r\n"
        b"$CDDSE,1,1,A,3380400790,00,45894494*1B\r\n"
    )
    beidou_seed = b"".join(
        sentence(s)
        for s in (
            "BDICI,0243561,0,0,3,60,2,N,0",
            "BDFKI,TXA,N,0,0,0045",
            "BDTXR,1,0300112,1,,48656C6C6F",
            "BDDWR,1,0300112,,2230.5000,N,11400.2500,E",
        )
    )
    return {
        "nmea_gnss": (nmea, [gnss_seed]),
        "gpsd_json": (nmea, [gpsd_seed]),
        "ais": (ais, [ais_seed]),
        "dsc": (dsc, [dsc_seed]),
        "beidou": (beidou, [beidou_seed]),
    }


def _signed_targets() -> Targets:
    """What comes from the platform: envelopes, commands, bundles, manifests, configs."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drivers.parts import parse_config
    from edge.commands import Rejected as CommandRejected
    from edge.commands import parse_command
    from edge.reconfig import BundleError, bundle_from
    from firmware_bridge.manifest import ManifestRejected, _payload
    from firmware_bridge.manifest import check as manifest_check
    from floor.cbor_guard import CborRefused
    from floor.cbor_guard import check as guard
    from floor.envelope import Signer, keyring, verify
    from floor.errors import ConfigError, EnvelopeError

    platform = Ed25519PrivateKey.generate()
    signer = Signer(platform)
    keys = keyring(platform.public_key())

    def envelope(data: bytes) -> None:
        with contextlib.suppress(EnvelopeError):
            verify(data, keys)

    def command(data: bytes) -> None:
        # what the gateway does with a verified payload (a stolen key's worst)
        try:
            guard(data)
            parse_command(cbor2.loads(data))
        except (CborRefused, CommandRejected, cbor2.CBORDecodeError):
            pass

    gw_dir = Path(tempfile.mkdtemp(prefix="fuzz-gw-"))
    (gw_dir / "gateway.key").write_bytes(b"")
    current = parse_config(
        '[gateway]\nid = "gw-f"\nkey = "gateway.key"\nstate_dir = "state"\n',
        file=str(gw_dir / "gateway.toml"),
        base=gw_dir,
        check_files=False,
    )

    def bundle(data: bytes) -> None:
        # a verified bundle's payload (what a stolen command key could send): the input as
        # CBOR when it decodes, else as the config text of a well-formed payload
        try:
            guard(data)
            payload = cbor2.loads(data)
        except (CborRefused, cbor2.CBORDecodeError):
            payload = {"v": 1, "gw": "gw-f", "config": data.decode("utf-8", "replace")}
        with contextlib.suppress(BundleError):
            bundle_from(payload, platform.public_key(), current)

    def manifest(data: bytes) -> None:
        # unsigned bytes at the verifier, and the same bytes as a verified payload
        with contextlib.suppress(ManifestRejected):
            manifest_check(
                data,
                firmware_key=platform.public_key(),
                device_class="sos-button-v2",
                running=(1, 4, 2),
                floor=None,
                now_ms=1_790_000_000_000,
                max_size=1 << 26,
            )
        try:
            guard(data)
            _payload(cbor2.loads(data))
        except (CborRefused, cbor2.CBORDecodeError, ManifestRejected):
            pass

    def toml(data: bytes) -> None:
        with contextlib.suppress(ConfigError):
            parse_config(data.decode("utf-8", "replace"), file="fuzz.toml", base=gw_dir, check_files=False)

    examples = ROOT / "config"
    cmd_seed, manifest_seed = _signed_seeds()
    return {
        "envelope_cbor": (envelope, [signer.sign({"v": 1, "id": "c1"}), cmd_seed]),
        "command_cbor": (command, [cmd_seed]),
        "bundle": (bundle, [(examples / "gateway.toml").read_bytes()[:600]]),
        "fw_manifest": (manifest, [manifest_seed]),
        "toml_config": (toml, [(examples / "maritime-station.toml").read_bytes()[:800]]),
    }


def _signed_seeds() -> tuple[bytes, bytes]:
    """A command's payload and a manifest's, well-formed."""
    import cbor2

    cmd = {"v": 1, "id": "c1", "type": "sos.ack", "to": "gw-f", "cseq": 5, "iat": 0, "exp": 1, "args": {}}
    manifest = {"v": 1, "device_class": "sos-button-v2", "version": "1.5.0", "size": 100, "sha256": bytes(32)}
    return cbor2.dumps(cmd), cbor2.dumps(manifest)


def _ble_targets() -> Targets:
    """The wearables' GATT values."""
    from drivers.ble import profiles as p
    from drivers.ble.kinds import man_down

    parsers: list[Callable[[bytes], object]] = [
        p.parse_sos_event,
        lambda body: p.parse_sos_event(body, KEY16),
        p.parse_camera_state,
        p.parse_clip_mark,
        p.parse_feedback,
        lambda body: man_down.parse_event(body, KEY16),
        man_down.parse_interval,
    ]

    def ble(data: bytes) -> None:
        # the first byte picks the characteristic, the rest is its value
        parsers[min(data[0], len(parsers) - 1) if data else 0](data[1:])

    sos = p.encode_sos_event(p.SosEvent(p.SosEventType.LONG_PRESS, 7, 1000, 1), KEY16)
    return {"ble_profiles": (ble, [b"\x00" + p.encode_counted(2, 1, 5), b"\x01" + sos, b"\x03" + bytes(44)])}


def _smp_targets() -> Targets:
    """A device's answers to the flasher."""
    from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite, ImageUploadWrite
    from smpclient.requests.os_management import ResetWrite
    from smpclient.transport import SMPTransport

    from firmware_bridge.smp import LINK_ERRORS, _CheckedClient

    class Wire(SMPTransport):
        """The device's side of the link: it answers every request with the input."""

        frame = b""

        async def connect(self, address: str, timeout_s: float) -> None:
            return None

        async def disconnect(self) -> None:
            return None

        async def send(self, data: bytes) -> None:
            return None

        async def receive(self) -> bytes:
            return self.frame

        async def send_and_receive(self, data: bytes) -> bytes:
            # the input, with the request's sequence number, so decoding goes past that check
            frame = bytearray(self.frame)
            if len(frame) > 6:
                frame[6] = data[6]
            return bytes(frame)

        @property
        def mtu(self) -> int:
            return 252

        def initialize(self, smp_server_transport_buffer_size: int) -> None:
            return None

    wire = Wire()
    client = _CheckedClient(wire, "fuzz", timeout_s=1.0)
    requests: list[Any] = [
        ImageStatesRead(),
        ImageStatesWrite(confirm=True),
        ResetWrite(),
        ImageUploadWrite(off=0, data=b"x", image=0, len=1),
    ]
    loop = asyncio.new_event_loop()

    def smp(data: bytes) -> None:
        # what the flasher does with a device's answer to each of its requests
        wire.frame = data[1:]
        with contextlib.suppress(*LINK_ERRORS):
            loop.run_until_complete(
                client.request(requests[data[0] % len(requests)] if data else requests[0])
            )

    return {"smp_frames": (smp, [b"\x00" + _smp_states_seed(), b"\x03" + _smp_states_seed()])}


def _smp_states_seed() -> bytes:
    """A well-formed image-states response (the flasher's first question)."""
    import cbor2

    body = cbor2.dumps({"images": [{"slot": 0, "version": "1.4.2", "hash": bytes(32), "active": True}]})
    return bytes([1, 0, len(body) >> 8, len(body) & 0xFF, 0, 1, 0, 0]) + body


def _platform_targets() -> Targets:
    """What the platform's verifier takes from the fleet: signed messages (COSE), SMS parts
    to put back together, the compact and short forms; and the modem's replies."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drivers.modem.at import AtReader
    from drivers.modem.pdu import Reassembly, submit
    from floor import compact
    from floor.cbor_guard import CborRefused
    from floor.cbor_guard import check as guard
    from floor.envelope import Signer, keyring
    from floor.errors import EnvelopeError
    from tools.verify import Tally

    key = Ed25519PrivateKey.generate()
    signer, keys = Signer(key), keyring(key.public_key())

    def verifier(data: bytes) -> None:
        # what a gateway's key signed (the worst a gateway of the fleet can send), and the
        # same bytes unsigned: a line for each, whatever they hold
        tally = Tally(gateways={next(iter(keys)): "gw-f"})
        json.dumps(tally.add("gridedge/v1/gw-f/up/gnss.fix", signer.sign_bytes(data), keys), default=str)
        json.dumps(tally.add("gridedge/v1/gw-f/up/gnss.fix", data, keys), default=str)
        json.dumps(tally.summary(), default=str)

    def sms(data: bytes) -> None:
        # SMS user data from any sender, in parts of any size; a whole message is verified
        parts, tally = Reassembly(per_sender=4, max_open=16), Tally()
        for i in range(0, len(data), 67):
            whole = parts.feed(f"+86{data[i] % 4}", data[i : i + 67], now=float(i))
            if whole is not None:
                json.dumps(tally.add_compact(whole, keys), default=str)

    def compact_forms(data: bytes) -> None:
        # a short form as a bearer hands it over; a compact array as a verified payload
        # (what verify has let through its CBOR guard)
        with contextlib.suppress(EnvelopeError):
            compact.read_short(data)
        try:
            guard(data)
            decoded = cbor2.loads(data)
        except (CborRefused, cbor2.CBORDecodeError):
            return  # refused as verify refuses it (EnvelopeError CBOR)
        with contextlib.suppress(EnvelopeError):
            compact.unpack(decoded)

    def modem(data: bytes) -> None:
        AtReader().feed(data)

    payload = {
        "v": 1,
        "gw": "gw-f",
        "ep": [1, bytes(8)],
        "seq": 7,
        "kind": "sos.alarm",
        "src": "b",
        "prio": 0,
        "tq": "gnss",
        "recs": [{"tb": 1, "tu": 2, "d": {"device": "b", "counter": 3, "fix": {"lat": 1.5, "lon": 2.5}}}],
    }
    signed_compact = signer.sign_bytes(cbor2.dumps(compact.pack(payload)))
    sms_seed = b"".join(p.user_data for p in submit("+8613800138000", signed_compact, 0x0102))
    modem_seed = (
        b"\r\nOK\r\n\r\n+CSQ: 21,99\r\n\r\nOK\r\n\r\n> \r\n+CMGS: 7\r\n\r\nOK\r\n"
        b'+CMTI: "SM",3\r\n+CMS ERROR: 331\r\n'
    )
    return {
        "verifier_cose": (verifier, [cbor2.dumps(payload)]),
        "sms_reassembly": (sms, [sms_seed]),
        "compact": (compact_forms, [cbor2.dumps(compact.pack(payload)), cbor2.dumps(compact.short(payload))]),
        "modem_lines": (modem, [modem_seed]),
    }


def _listener_targets() -> Targets:
    """What a peer sends the gateway's listeners: gpsd requests, HTTP requests to the page."""
    import types

    from aiohttp import web
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.http_parser import HttpRequestParserPy

    from edge.feeds import request
    from edge.i18n import from_accept_language
    from edge.web.server import StatusSite, embed
    from floor.config import WebConfig

    def gpsd(data: bytes) -> None:
        for cmd in data.split(b";"):
            request(cmd.decode("ascii", "replace"))

    async def status() -> dict[str, Any]:
        return {"gw": "gw-f"}

    site = StatusSite(WebConfig(listen="0.0.0.0:8480"), status, token="t0ken")
    loop = asyncio.new_event_loop()
    # the connection a request arrived on, as the page's checks see it (no TLS, no address)
    conn = types.SimpleNamespace(transport=None, ssl_context=None, peername=None, sockname=None)

    def page(data: bytes) -> None:
        # the bytes through aiohttp's own request parser (its pure-Python one, which the
        # C one mirrors), then every request through the page's access guard
        parser = HttpRequestParserPy(conn, loop, 2**16, max_line_size=8190, max_field_size=8190)  # type: ignore[arg-type]
        try:
            messages, _upgraded, _tail = parser.feed_data(data)
        except HttpProcessingError:
            return  # answered 400 by the server, before the page sees it
        for message, payload in messages:
            req = web.Request(message, payload, conn, None, None, loop)  # type: ignore[arg-type]  # the connection's view
            from_accept_language(req.headers.get("Accept-Language"))
            with contextlib.suppress(web.HTTPException):
                site.admit(req)
            embed({"path": req.path, "query": dict(req.query)})

    page_seed = (
        b"GET /?token=t0ken&lang=zh_CN HTTP/1.1\r\nHost: x\r\nAccept-Language: zh-CN,zh;q=0.9\r\n"
        b"Cookie: gridedge_token=x\r\nAuthorization: Bearer t0ken\r\n\r\n"
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    return {
        "gpsd_commands": (gpsd, [b'?WATCH={"enable":true,"json":true};?POLL;?DEVICES;']),
        "page_request": (page, [page_seed]),
    }
