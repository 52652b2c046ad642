"""The gateway's receivers shared with local tools, so a chart plotter, OpenCPN, chrony or
`gpspipe` need no second reader on the serial port:

- a gpsd-compatible feed (`[web] gpsd`, gpsd's protocol 3: VERSION on connect; a
  request ends with `;` or a newline, as gpsd takes them; `?WATCH={"enable":true,
  "json":true}` answered with DEVICES and WATCH, then TPV and SKY (satellites in view and
  used, DOPs) from each GNSS fix and AIS objects from each decoded AIS report;
  `"nmea":true` (or `"raw":1|2`, what `gpspipe -r` asks) the sentences as the devices
  sent them; `"device":PATH` one device only; `?POLL`, `?DEVICES`, `?VERSION` answered;
  `?WATCH={"enable":false}` stops the stream);
- NMEA 0183 forwarding by UDP (`[web] nmea_udp`): each sentence as heard, checksum
  intact, one datagram per sentence; only sentences whose checksum verifies; with
  `nmea_ais_only`, only AIS (`!AIVDM`, `!AIVDO`).

Both are read-only taps on what the drivers already read; a slow or vanished client is
dropped, never waited for. The feed takes 16 clients, 4 from one address; a client that
has not asked for anything (`?WATCH`, `?POLL`...) within 30 s of connecting, or of its
last request while not watching, is closed, and when the feed is full the client idle
longest makes room for a new one: idle sockets cannot hold the feed from chrony or a
chart plotter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from drivers.ais.parse import AisReport
from drivers.gnss.parse import Fix
from drivers.nmea0183 import LineFramer, Sentence, check
from edge.listeners import peer_of
from edge.sky import SKY_TYPES, Sky
from floor.config import split_host_port

log = logging.getLogger(__name__)

RELEASE = "3.22"  # the gpsd release whose protocol this speaks (Debian 12's)
MAX_CLIENTS = 16
MAX_PER_PEER = 4
IDLE_S = 30.0  # a client neither watching nor asking is closed after this
MAX_QUEUED = 256  # lines a client may fall behind before it is dropped
MAX_REQUEST = 1024  # a request longer than this closes the client


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\r\n"


class _Client:
    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.watching = False  # JSON reports
        self.nmea = False  # the sentences as sent
        self.device = ""  # only this device's, when set
        self.asked = time.monotonic()  # when it last asked for something (or connected)

    def idle_s(self) -> float:
        return 0.0 if self.watching or self.nmea else time.monotonic() - self.asked

    def wants(self, dev: str) -> bool:
        return not self.device or self.device == dev

    def close(self) -> None:
        self.writer.transport.abort()

    def send(self, data: bytes) -> bool:
        """False when the client has fallen too far behind (it is then dropped)."""
        transport = self.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > MAX_QUEUED * 512:
            return False
        self.writer.write(data)
        return True


class GpsdFeed:
    def __init__(self, listen: str, devices: dict[str, str]) -> None:
        self.listen = listen
        self.devices = devices  # id -> kind (gnss, ais)
        self._clients: set[_Client] = set()
        self._last: dict[str, Fix] = {}  # device -> its latest fix (for ?POLL)
        self._sky: dict[str, Sky] = {}  # device -> its satellites, while anyone is connected
        self._sentences = Sentences()
        self.sent = 0
        self.dropped = 0
        self.refused = 0
        self.idle_closed = 0

    async def serve(self) -> None:
        host, port = split_host_port(self.listen)
        try:
            server = await asyncio.start_server(self._session, host, port)
        except OSError as exc:
            log.error("gpsd feed: cannot listen on %s: %s", self.listen, exc.strerror or exc)
            return
        log.info("gpsd feed on %s", self.listen)
        async with server:
            await server.serve_forever()

    def _admit(self, peer: str) -> bool:
        """Room for a client from `peer`: within its address's share and the feed's,
        made where either is full by closing the client (of that address, or any) idle
        longest; refused only when every client that would have to go is watching."""
        mine = [c for c in self._clients if c.peer == peer]
        if len(mine) >= MAX_PER_PEER:
            return self._evict(mine)
        if len(self._clients) >= MAX_CLIENTS:
            return self._evict(list(self._clients))
        return True

    def _evict(self, among: list[_Client]) -> bool:
        idlest = max(among, key=_Client.idle_s)
        if idlest.idle_s() <= 0.0:
            return False  # every one of them is watching: none is idle to make room
        self._clients.discard(idlest)
        idlest.close()
        self.idle_closed += 1
        return True

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.transport)
        if not self._admit(peer):
            self.refused += 1
            writer.transport.abort()
            return
        client = _Client(writer, peer)
        self._clients.add(client)
        version = {
            "class": "VERSION",
            "release": RELEASE,
            "rev": "gridedge",
            "proto_major": 3,
            "proto_minor": 14,
        }
        client.send(_line(version))
        pending = b""
        try:
            while True:
                data = await self._read(reader, client)
                if not data:
                    break
                *requests, pending = re.split(rb"[;\n]", pending + data)
                if len(pending) > MAX_REQUEST:
                    break
                for line in requests:
                    if line.strip():
                        client.asked = time.monotonic()
                        self._command(client, line.decode("ascii", "replace").strip())
        except ConnectionError:
            pass
        finally:
            self._clients.discard(client)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader, client: _Client) -> bytes:
        """What the client sent next; nothing when it closed, or stayed idle too long."""
        while True:
            try:
                return await asyncio.wait_for(reader.read(MAX_REQUEST), IDLE_S)
            except TimeoutError:
                if client.idle_s() > 0.0:
                    self.idle_closed += 1
                    return b""

    def _command(self, client: _Client, cmd: str) -> None:
        verb, opts = request(cmd)
        if verb == "?WATCH":
            self._watch(client, opts)
        elif verb == "?POLL":
            tpv = [_tpv(dev, fix) for dev, fix in sorted(self._last.items())]
            sky = [self._sky[dev].report(dev) for dev in sorted(self._last) if dev in self._sky]
            client.send(
                _line({"class": "POLL", "time": _iso_now(), "active": len(tpv), "tpv": tpv, "sky": sky})
            )
        elif verb == "?DEVICES":
            client.send(self._devices())
        elif verb == "?VERSION":
            client.send(_line({"class": "VERSION", "release": RELEASE, "rev": "gridedge", "proto_major": 3}))
        else:
            client.send(_line({"class": "ERROR", "message": f"Unrecognized request '{verb[:40]}'"}))

    def _watch(self, client: _Client, opts: dict[str, Any]) -> None:
        """gpsd's ?WATCH: what it names changes, what it leaves out stays as it was (a bare
        `?WATCH={"enable":true}` turns the JSON reports on, as gpsd does)."""
        enable = bool(opts.get("enable", True))
        nmea = bool(opts.get("nmea", client.nmea)) or opts.get("raw") in (1, 2)
        json_on = bool(opts.get("json", client.watching or not nmea))
        client.watching, client.nmea = enable and json_on, enable and nmea
        device = opts.get("device")
        if isinstance(device, str):
            client.device = device if device in self.devices else client.device
        client.send(self._devices())
        watch = {"class": "WATCH", "enable": enable, "json": client.watching, "nmea": client.nmea}
        client.send(_line(watch | ({"device": client.device} if client.device else {})))

    def _devices(self) -> bytes:
        devices = [
            {"class": "DEVICE", "path": dev, "driver": f"gridedge {kind}", "activated": _iso_now()}
            for dev, kind in sorted(self.devices.items())
        ]
        return _line({"class": "DEVICES", "devices": devices})

    def _broadcast(self, dev: str, data: bytes, *, nmea: bool = False) -> None:
        for client in list(self._clients):
            if not ((client.nmea if nmea else client.watching) and client.wants(dev)):
                continue
            if not client.send(data):
                self.dropped += 1
                self._clients.discard(client)
                client.writer.close()
        self.sent += 1

    def tap(self, dev: str, data: bytes) -> None:
        """The bytes a device sent, as read: its sentences for the clients watching NMEA,
        its satellites (GSV, GSA) for SKY. Nothing is done while no one is connected."""
        if not self._clients or dev not in self.devices:
            return
        for checked in self._sentences.feed(dev, data):  # as gpsd: only what a client can trust
            if checked.type in SKY_TYPES and self.devices[dev] == "gnss":
                self._sky.setdefault(dev, Sky()).sentence(checked)
            self._broadcast(dev, checked.raw + b"\r\n", nmea=True)

    def fix(self, dev: str, fix: Fix) -> None:
        self._last[dev] = fix
        if not self._clients:
            return
        self._broadcast(dev, _line(_tpv(dev, fix)))
        sky: dict[str, Any] = (
            self._sky[dev].report(dev) if dev in self._sky else {"class": "SKY", "device": dev}
        )
        if fix.hdop is not None:
            sky.setdefault("hdop", fix.hdop)
        if "satellites" not in sky and fix.sats is not None:
            sky["uSat"] = fix.sats  # a receiver that sends no GSV: how many it used, still
        self._broadcast(dev, _line(sky))

    def ais(self, dev: str, rep: AisReport) -> None:
        if not self._clients:
            return
        d = rep.data
        obj: dict[str, Any] = {
            "class": "AIS",
            "device": dev,
            "type": rep.msg_type,
            "repeat": 0,
            "mmsi": rep.mmsi,
            "scaled": True,
        }
        for ours, theirs in (
            ("nav_status", "status"),
            ("sog", "speed"),
            ("cog", "course"),
            ("heading", "heading"),
            ("lat", "lat"),
            ("lon", "lon"),
            ("name", "shipname"),
            ("callsign", "callsign"),
            ("destination", "destination"),
            ("ship_type", "shiptype"),
        ):
            if ours in d:
                obj[theirs] = d[ours]
        self._broadcast(dev, _line(obj))

    def snapshot(self) -> dict[str, Any]:
        return {
            "listen": self.listen,
            "clients": len(self._clients),
            "sent": self.sent,
            "dropped": self.dropped,
            "refused": self.refused,
            "idle_closed": self.idle_closed,
        }


class Sentences:
    """The verified sentences in each tapped device's bytes, framed per device (a
    sentence split across reads is put back together); the rest is dropped."""

    def __init__(self) -> None:
        self._framers: dict[str, LineFramer] = {}

    def feed(self, dev: str, data: bytes) -> Iterator[Sentence]:
        for line in self._framers.setdefault(dev, LineFramer()).feed(data):
            if isinstance(line, bytes) and isinstance(checked := check(line), Sentence):
                yield checked


Tap = Callable[[str, bytes], None]


def fan_out(taps: list[Tap]) -> Tap | None:
    """One tap for the drivers that hands their bytes to each of `taps` (none: no tap)."""
    if len(taps) <= 1:
        return taps[0] if taps else None

    def tap(dev: str, data: bytes) -> None:
        for t in taps:
            t(dev, data)

    return tap


def request(cmd: str) -> tuple[str, dict[str, Any]]:
    """A client's request (`?WATCH={...};`) as its verb and its options (a JSON object,
    or nothing: anything else a client sends as options is ignored)."""
    verb, _, arg = cmd.strip().rstrip(";").partition("=")
    try:
        opts = json.loads(arg) if arg else {}
    except (ValueError, RecursionError):
        opts = {}
    return verb, opts if isinstance(opts, dict) else {}


def _tpv(dev: str, fix: Fix) -> dict[str, Any]:
    tpv: dict[str, Any] = {"class": "TPV", "device": dev, "mode": fix.mode, "lat": fix.lat, "lon": fix.lon}
    if fix.utc_ms is not None:
        tpv["time"] = _iso(fix.utc_ms)
    if fix.alt is not None:
        tpv["altMSL"] = tpv["alt"] = fix.alt
    if fix.speed is not None:
        tpv["speed"] = fix.speed
    if fix.course is not None:
        tpv["track"] = fix.course
    return tpv


def _iso(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _iso_now() -> str:
    return _iso(int(dt.datetime.now(dt.UTC).timestamp() * 1000))


class NmeaForwarder:
    """Each verified sentence of the tapped devices, as heard, one datagram each."""

    def __init__(self, targets: tuple[str, ...], *, ais_only: bool) -> None:
        self.targets = [split_host_port(t) for t in targets]
        self.ais_only = ais_only
        self._sentences = Sentences()
        family = socket.AF_INET6 if any(":" in h for h, _p in self.targets) else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.forwarded = 0
        self.failed = 0

    def tap(self, dev: str, data: bytes) -> None:
        for checked in self._sentences.feed(dev, data):
            line = checked.raw
            if self.ais_only and not (checked.start == "!" and checked.type in ("VDM", "VDO")):
                continue
            for target in self.targets:
                try:
                    self._sock.sendto(line + b"\r\n", target)
                    self.forwarded += 1
                except OSError:
                    self.failed += 1  # a full buffer or an unreachable host: dropped, never waited for

    def close(self) -> None:
        self._sock.close()

    def snapshot(self) -> dict[str, Any]:
        return {"targets": len(self.targets), "forwarded": self.forwarded, "failed": self.failed}
