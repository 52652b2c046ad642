"""The technician's status page, live, and `/metrics`, served by the gateway (aiohttp).

Read-only: GET and HEAD only. Access fit for a LAN: on a loopback-only listener (the
default) anyone on the gateway itself may look; on any other address every request
needs the token `gridedge provision` wrote (`[web] token_file`): once as `?token=` (the
page then keeps it in a cookie and drops it from the address), or as `Authorization:
Bearer`. The page is one template (edge/web/templates) and two static files, all from
the package (no CDN); it follows the gateway by server-sent events (`/events`: the
status document when it changed, built every half second, once for all viewers, while
someone is looking; nothing at all when nobody is). Its text is English or Simplified Chinese, as the
browser asks, switchable on the page.

Every string in the status document may come from a device, a modem or a peer: the page
embeds the document with `<`, `>` and `&` escaped, the script escapes what it shows, and
the Content-Security-Policy lets only the page's own script and style run. The listener
takes 64 connections, 8 from one address, and closes one whose request headers are not
whole within 10 s (edge/listeners.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from edge.i18n import LANGS, from_accept_language, translator
from edge.listeners import Admission, guarded
from edge.web.metrics import exposition
from edge.web.strings import PAGE_STRINGS
from floor.config import WebConfig

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "gridedge_token"
COOKIE_MAX_AGE_S = 30 * 86400  # a technician's phone stays let in for a month, past a browser restart
EVENT_EVERY_S = 0.5
HEARTBEAT_S = 15.0
# Only the page's own script, style and requests; nothing framed, no form posted anywhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def embed(obj: Any) -> str:
    """JSON for a `<script type="application/json">` block: no `<`, `>` or `&` in it, so
    no string inside can end the block or start markup."""
    text = json.dumps(obj, default=str, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


Raw = Callable[[str], list[dict[str, Any]] | None]  # a device's last lines, None: no such device
Snapshot = Callable[[], Awaitable[dict[str, Any]]]


def load_token(cfg: WebConfig) -> str | None:
    if cfg.token_file is None:
        return None
    token = cfg.token_file.read_text(encoding="utf-8").strip()
    return token or None


class Feed:
    """The live status document, built once per tick however many viewers follow it: a
    task runs while at least one viewer is connected and none runs when nobody is."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self.text = ""
        self.version = 0  # bumped each time the document changed
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.viewers = 0

    async def _run(self) -> None:
        while True:
            try:
                text = json.dumps(await self._snapshot(), default=str, sort_keys=True)
            except Exception:  # the page keeps its last document; the log says why
                log.exception("status page: the status document could not be built")
                text = self.text
            if text != self.text:
                self.text, self.version = text, self.version + 1
                async with self._changed:
                    self._changed.notify_all()
            await asyncio.sleep(EVENT_EVERY_S)

    def join(self) -> int:
        """A viewer arrives; the version it has seen (so its first document is a fresh one)."""
        self.viewers += 1
        if self._task is None:
            self.text = ""  # whatever was built before nobody looked is stale now
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self.version - 1 if self.text else self.version

    def leave(self) -> None:
        self.viewers -= 1
        if self.viewers == 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    async def next(self, seen: int, timeout: float) -> bool:
        """Wait until the document is newer than version `seen`; False on timeout."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.version != seen)
        except TimeoutError:
            return False
        return True


class StatusSite:
    def __init__(
        self, cfg: WebConfig, snapshot: Snapshot, *, token: str | None, raw: Raw = lambda _d: None
    ) -> None:
        self.cfg = cfg
        self._snapshot = snapshot
        self._raw = raw
        self._token = token
        self._open = cfg.open
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
        )
        self.feed = Feed(snapshot)
        self.refused = 0

    # -- access -----------------------------------------------------------------------------

    def _allowed(self, request: web.Request) -> bool:
        if self._open:
            return True
        if self._token is None:
            return False
        offered = (
            request.query.get("token")
            or request.cookies.get(COOKIE)
            or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        )
        # a peer's bytes may not be text at all (a lone surrogate from a bad %-escape)
        given = offered.encode("utf-8", "surrogatepass") if offered else b""
        return bool(given) and hmac.compare_digest(given, self._token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.admit(request)
        response: web.StreamResponse = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def admit(self, request: web.Request) -> None:
        """Whether a request may go on to its handler: an HTTPException (refused, or a
        redirect that keeps the token in a cookie) when not."""
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if not self._allowed(request):
            self.refused += 1
            lang = from_accept_language(request.headers.get("Accept-Language"))
            _ = translator(lang).gettext
            body = _(
                "A token is needed: open http://{host}/?token=TOKEN, TOKEN being the contents of the "
                "gateway's web.token (beside its config; gridedge provision printed the address)"
            ).format(host=request.host.encode("utf-8", "replace").decode())  # whatever a peer put there
            raise web.HTTPUnauthorized(
                text=body + "\n", headers={"WWW-Authenticate": 'Bearer realm="gridedge"'}
            )
        if "token" in request.query and request.path == "/":
            # keep it in a cookie; the address bar (and any screenshot of it) loses it, and
            # only it: the language asked for with it stays
            asked = request.query.get("lang", "")
            resp = web.HTTPSeeOther("/" + ("?" + urlencode({"lang": asked}) if asked in LANGS else ""))
            resp.set_cookie(
                COOKIE, request.query["token"], httponly=True, samesite="Strict", max_age=COOKIE_MAX_AGE_S
            )
            raise resp

    # -- handlers ------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        lang = request.query.get("lang") or from_accept_language(request.headers.get("Accept-Language"))
        lang = lang if lang in LANGS else "en"
        catalogs = {code: {s: translator(code).gettext(s) for s in PAGE_STRINGS} for code in LANGS}
        doc = embed(await self._snapshot())
        tmpl = self._templates.get_template("page.html")
        # no await from here to the render: another request's language cannot come between
        self._templates.install_gettext_translations(translator(lang), newstyle=True)  # type: ignore[attr-defined]
        html = tmpl.render(
            lang=lang,
            html_lang="zh-CN" if lang == "zh_CN" else "en",
            catalogs=embed(catalogs),
            doc=doc,
        )
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def raw(self, request: web.Request) -> web.Response:
        """A device's last lines as it sent them, the refused ones marked (JSON with
        ?format=json); refreshed every 2 s."""
        device = request.match_info["device"]
        lines = self._raw(device)
        if lines is None:
            raise web.HTTPNotFound(text=f"no stream device {device!r}\n")
        if request.query.get("format") == "json":
            return web.json_response({"device": device, "lines": lines})
        lang = request.query.get("lang") or from_accept_language(request.headers.get("Accept-Language"))
        lang = lang if lang in LANGS else "en"
        tmpl = self._templates.get_template("raw.html")
        self._templates.install_gettext_translations(translator(lang), newstyle=True)  # type: ignore[attr-defined]
        shown = [
            dict(x, at=dt.datetime.fromtimestamp(x["t"] / 1000, dt.UTC).strftime("%H:%M:%S")) for x in lines
        ]
        html = tmpl.render(device=device, lines=shown, html_lang="zh-CN" if lang == "zh_CN" else "en")
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def status(self, _request: web.Request) -> web.Response:
        return web.json_response(await self._snapshot(), dumps=lambda o: json.dumps(o, default=str))

    async def metrics(self, _request: web.Request) -> web.Response:
        body = exposition(await self._snapshot())
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        feed = self.feed
        seen = feed.join()
        try:
            while True:
                if await feed.next(seen, HEARTBEAT_S):
                    seen = feed.version
                    await resp.write(f"data: {feed.text}\n\n".encode())
                else:
                    await resp.write(b": keepalive\n\n")
        finally:
            feed.leave()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self.page)
        app.router.add_get("/events", self.events)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/raw/{device}", self.raw)
        app.router.add_static("/static/", HERE / "static", show_index=False)
        return app


async def serve_site(
    cfg: WebConfig,
    snapshot: Snapshot,
    sock: socket.socket,
    admission: Admission,
    *,
    raw: Raw = lambda _d: None,
) -> None:
    """Serve the page on the bound socket until cancelled (edge/web/listen.py), each
    connection admitted and held to the header deadline."""
    site = StatusSite(cfg, snapshot, token=load_token(cfg), raw=raw)
    runner = web.AppRunner(
        site.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0, keepalive_timeout=15.0
    )
    await runner.setup()
    assert runner.server is not None
    server = await asyncio.get_running_loop().create_server(guarded(runner.server, admission), sock=sock)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        await runner.cleanup()
