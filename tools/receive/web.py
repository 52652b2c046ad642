"""The receiver's HTTP side: `/metrics` (Prometheus, in the gateway's conventions) and
`/sms`, where an SMS provider delivers what the gateways sent as SMS.

`POST /sms` takes JSON `{"from": "+8613800000000", "ud": "HEX"}` (or a form with the
same fields): one SMS's user data, the concatenation header included, as a provider
that hands over binary SMS gives it. It needs `Authorization: Bearer TOKEN`. The answer
comes once the part (or the whole message it completes) is committed: 200 with the
outcome (`part`, `stored`, `duplicate`, or why it was refused); a provider that gets no
answer delivers again, and the store keeps it once."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

SENDER = re.compile(r"\+?[0-9A-Za-z]{1,20}")
MAX_BODY = 4096  # one SMS is 140 bytes of user data; a delivery is far below this
ANSWER_S = 30.0  # a delivery not committed by then is answered 503 (the provider tries again)

Submit = Callable[[str, bytes], "Future[str]"]


class _Stats(Collector):
    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        s = self.read()
        out = CounterMetricFamily(
            "gridedge_receive_messages", "messages taken, by what became of them", labels=["outcome"]
        )
        for outcome, n in sorted(s["outcomes"].items()):
            out.add_metric([outcome], n)
        yield out
        yield CounterMetricFamily("gridedge_receive_batches", "transactions committed", value=s["batches"])
        yield CounterMetricFamily(
            "gridedge_receive_commit_seconds", "time spent storing and committing", value=s["commit_s"]
        )
        yield GaugeMetricFamily(
            "gridedge_receive_queue_messages", "messages received, not yet committed", value=s["queue"]
        )
        yield GaugeMetricFamily(
            "gridedge_receive_last_commit_timestamp_seconds",
            "unix time of the last commit",
            value=s["last_commit"],
        )
        hook = CounterMetricFamily(
            "gridedge_receive_webhook_posts", "life-safety posts to the webhook, by result", labels=["result"]
        )
        for result, n in sorted(s["webhook"].items()):
            hook.add_metric([result], n)
        yield hook
        yield GaugeMetricFamily(
            "gridedge_receive_webhook_waiting",
            "life-safety posts not yet accepted",
            value=s["webhook_waiting"],
        )


def app(stats: Callable[[], Mapping[str, Any]], submit: Submit | None, token: str | None) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Stats(stats))

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    async def sms(request: web.Request) -> web.Response:
        if submit is None or token is None:
            return _error(404, "not_enabled", "this receiver takes no SMS (start it with --sms-token-file)")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "unauthorised", "Authorization: Bearer TOKEN")
        try:
            if request.content_type == "application/json":
                body = await request.json()
            else:
                body = dict(await request.post())
            sender, ud = str(body["from"]), bytes.fromhex(str(body["ud"]))
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "bad_request", f'a JSON object {{"from": SENDER, "ud": HEX}} ({exc})')
        if not SENDER.fullmatch(sender) or not 0 < len(ud) <= 140:
            return _error(400, "bad_request", "from: a phone number; ud: 1 to 140 bytes")
        try:
            outcome = await asyncio.wait_for(asyncio.wrap_future(submit(sender, ud)), ANSWER_S)
        except TimeoutError:
            return _error(503, "busy", "not committed in time; deliver again")
        return web.json_response({"ok": True, "outcome": outcome})

    application = web.Application(client_max_size=MAX_BODY)
    application.router.add_get("/metrics", metrics)
    application.router.add_post("/sms", sms)
    return application


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"ok": False, "error": code, "detail": detail}),
        content_type="application/json",
    )


def serve(application: web.Application, host: str, port: int, ready: Future[int]) -> None:
    """Run the HTTP side on this thread until the process ends; `ready` gets the port."""

    async def main() -> None:
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        ready.set_result(sockets[0].getsockname()[1] if sockets else port)
        await asyncio.Event().wait()

    asyncio.run(main())
