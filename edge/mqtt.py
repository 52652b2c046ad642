"""One MQTT connection as an async context manager, paho-mqtt driven by the event loop.

Why the event loop and not paho's network thread: PUBACKs arrive thousands a second
during a drain, and each one handed across threads cost a wake-up and the GIL; with
the socket registered on the loop (`add_reader`/`add_writer`, paho's documented
external-loop callbacks) every callback runs on the loop thread and all state lives
there. Only the blocking connect (TCP and TLS handshakes) runs in an executor.
A connection is used once: a reconnect makes a new one, which is how a freshly
signed Last Will is attached at every CONNECT (docs/envelope-and-topics.md, Topics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from floor.errors import AuthRejected, BrokerUnavailable, PermanentError
from floor.messages import Incoming

log = logging.getLogger(__name__)

# CONNACK codes that retrying will not fix (MQTT 3.1.1 section 3.2.2.3).
_AUTH_CODES = {2, 4, 5}  # identifier rejected, bad user name or password, not authorised
# paho's names for the MQTT 3.1.1 CONNACK refusals, back to their 3.1.1 numbers.
_V311_CODES = {
    "Unsupported protocol version": 1,
    "Client identifier not valid": 2,
    "Server unavailable": 3,
    "Bad user name or password": 4,
    "Not authorized": 5,
}


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca: str
    cert: str | None = None
    key: str | None = None


class TlsUnusable(PermanentError):
    """The TLS files the config names cannot be read or do not make a TLS context."""


class MqttConnection:
    """A connected session; `publish` resolves on PUBACK and fails if the link drops.

    Over 20 methods because it is paho's callback surface (connect, disconnect, publish,
    subscribe, message, socket open/close/register/unregister for the asyncio loop)
    turned into one async object; each method is a few lines."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive: int = 30,
        clean_session: bool = False,
        will: Will | None = None,
        tls: TlsSettings | None = None,
        inflight: int = 64,
        connect_timeout: float = 10.0,
        on_message: Callable[[Incoming], None] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._keepalive = keepalive
        self._timeout = connect_timeout
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._sock: Any = None
        self._misc: asyncio.Task[None] | None = None
        self._subs: dict[int, asyncio.Future[None]] = {}
        self._connected: asyncio.Future[bool] = self._loop.create_future()
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        c.connect_timeout = connect_timeout
        c.max_inflight_messages_set(inflight)
        c.max_queued_messages_set(0)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        if tls is not None:
            try:
                c.tls_set(
                    ca_certs=tls.ca,
                    certfile=tls.cert,
                    keyfile=tls.key,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError) as exc:
                # A missing or unreadable key is the uplink's problem alone: it is retried
                # at the longest backoff while everything else keeps working and storing.
                files = ", ".join(f for f in (tls.ca, tls.cert, tls.key) if f)
                raise TlsUnusable(
                    f"TLS: cannot use {files}: {getattr(exc, 'strerror', None) or exc}"
                ) from exc
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_publish = self._cb_publish
        c.on_subscribe = self._cb_subscribe
        c.on_message = self._cb_message
        self._client = c

    # paho callbacks (all on the loop thread) ------------------------------------

    def _cb_connect(self, _c: Any, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        # For MQTT 3.1.1 paho maps the CONNACK return code into a ReasonCode; its
        # `value` is the v5 code, which for 3.1.1's refusals is not the 3.1.1 number.
        self._on_connack(
            0 if not rc.is_failure else _V311_CODES.get(rc.getName(), 3), bool(flags.session_present)
        )

    def _cb_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        # Under MQTT 3.1.1 paho reports a socket closed under it as "Unspecified error".
        self._on_closed("closed by the broker or the network" if rc == 128 else str(rc))

    def _cb_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _cb_subscribe(self, _c: Any, _u: Any, mid: int, rcs: Any, _p: Any) -> None:
        self._on_suback(mid, any(getattr(rc, "is_failure", False) for rc in rcs))

    def _cb_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is not None:
            self._on_message(Incoming(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))

    # the socket on the loop --------------------------------------------------------

    def _attach(self) -> None:
        sock = self._client.socket()
        if sock is None:
            raise BrokerUnavailable("no socket after connect")
        self._sock = sock
        # Nagle would hold a small PUBLISH (an alarm) while an earlier segment waits for
        # its ACK, which the broker may delay by 40 ms; MQTT packets are whole messages.
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, self._readable)
        self._client.on_socket_register_write = self._want_write
        self._client.on_socket_unregister_write = self._wrote_all
        self._client.on_socket_close = self._socket_closed
        if self._client.want_write():
            self._loop.add_writer(sock, self._writable)
        self._misc = self._loop.create_task(self._misc_loop(), name="mqtt.keepalive")

    def _want_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._loop.add_writer(sock, self._writable)

    def _wrote_all(self, _c: Any, _u: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    def _socket_closed(self, _c: Any, _u: Any, _sock: Any) -> None:
        self._detach()

    def _detach(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
            self._sock = None

    def _readable(self) -> None:
        rc = self._client.loop_read()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self.closed.done():
            self._on_closed(paho.error_string(rc))

    def _writable(self) -> None:
        self._client.loop_write()

    async def _misc_loop(self) -> None:
        # keepalive PINGREQ, PINGRESP timeout (a half-open link), retries: paho's loop_misc
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            done, _ = await asyncio.wait((self.closed,), timeout=1.0)
            if done:
                return
        if not self.closed.done():
            self._on_closed("keepalive timeout")

    # event loop side -------------------------------------------------------------

    def _on_connack(self, rc: int, session_present: bool) -> None:
        if self._connected.done():
            return
        if rc == 0:
            self._connected.set_result(session_present)
        elif rc in _AUTH_CODES:
            self._connected.set_exception(AuthRejected(f"broker refused the connection (CONNACK {rc})"))
        else:
            self._connected.set_exception(BrokerUnavailable(f"broker refused the connection (CONNACK {rc})"))

    def _on_closed(self, reason: str) -> None:
        exc = BrokerUnavailable(f"connection lost: {reason}")
        if not self._connected.done():
            self._connected.set_exception(exc)
        if not self.closed.done():
            self.closed.set_result(exc)
        for fut in (*self._pending.values(), *self._subs.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        self._subs.clear()

    def _on_suback(self, mid: int, failed: bool) -> None:
        fut = self._subs.pop(mid, None)
        if fut is not None and not fut.done():
            if failed:
                fut.set_exception(AuthRejected("broker refused the subscription"))
            else:
                fut.set_result(None)

    # API ---------------------------------------------------------------------------

    async def __aenter__(self) -> MqttConnection:
        try:
            await self._loop.run_in_executor(None, self._connect_blocking)
        except ssl.SSLCertVerificationError as exc:
            raise AuthRejected(f"TLS: broker certificate not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise AuthRejected(f"TLS handshake failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach {self._host}:{self._port}: {exc.strerror or exc}") from exc
        self._attach()
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(self._connected)
        except TimeoutError:
            await self._shutdown()
            raise BrokerUnavailable(f"no CONNACK from {self._host}:{self._port}") from None
        except BaseException:
            await self._shutdown()
            raise
        return self

    def _connect_blocking(self) -> None:
        self._client.connect(self._host, self._port, keepalive=self._keepalive)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    def drop(self, reason: str) -> None:
        """Give the connection up now (a link taken for dead): it ends as if it broke, and
        its socket is closed on the way out."""
        self._on_closed(reason)

    async def _shutdown(self) -> None:
        if not self.closed.done():
            self._client.disconnect()  # DISCONNECT, so the broker does not publish the Will
            if self._sock is not None:
                self._client.loop_write()
        self._on_closed("closed by us")
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
        self._detach()
        with contextlib.suppress(OSError):
            sock = self._client.socket()
            if sock is not None:
                sock.close()

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[None]:
        """Send at QoS 1; the future resolves on PUBACK and fails if the link drops first."""
        fut: asyncio.Future[None] = self._loop.create_future()
        if self.closed.done():
            fut.set_exception(BrokerUnavailable("not connected"))
            return fut
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            fut.set_exception(BrokerUnavailable(f"publish failed: {paho.error_string(info.rc)}"))
            return fut
        # PUBACK is posted to this loop by paho's thread, so it cannot run before this line.
        self._pending[info.mid] = fut
        return fut

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.publish_nowait(topic, payload, retain=retain)

    async def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        if not topics:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        rc, mid = self._client.subscribe([(t, 1) for t in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerUnavailable(f"subscribe failed: {paho.error_string(rc)}")
        self._subs[mid] = fut
        await fut

    @property
    def in_flight(self) -> int:
        return len(self._pending)
