"""The status page's listening socket, bound at start; the web stack (aiohttp, jinja2,
prometheus_client: some 14 MB of a Pi's memory) is loaded only when the first browser
or scraper connects, so a gateway nobody looks at pays nothing for its page."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from edge.listeners import Admission
from floor.config import WebConfig, split_host_port

log = logging.getLogger(__name__)


def bind(listen: str) -> socket.socket:
    host, port = split_host_port(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


WEB = Admission("status page", total=64, per_peer=8)  # the page and /metrics: one listener


async def serve_when_asked(
    cfg: WebConfig,
    snapshot: Callable[[], Awaitable[dict[str, Any]]],
    raw: Callable[[str], list[dict[str, Any]] | None] = lambda _dev: None,
) -> None:
    try:
        sock = bind(cfg.listen)
    except OSError as exc:
        log.error("web: cannot listen on %s: %s; no status page", cfg.listen, exc.strerror or exc)
        return
    log.info("web: status page on http://%s/%s", cfg.listen, "" if cfg.open else " (token required)")
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()
    with sock:  # closed however this ends: a restart binds it again
        loop.add_reader(sock.fileno(), asked.set)  # readable: a connection is waiting to be accepted
        try:
            await asked.wait()
        finally:
            loop.remove_reader(sock.fileno())
        from edge.web.server import serve_site

        await serve_site(cfg, snapshot, sock, WEB, raw=raw)
