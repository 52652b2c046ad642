"""Threat: a string from a device, a modem or a peer reaching the status page. What was
seen: the page embedded its data as `{{ doc | safe }}` inside a script block, so a modem
error line holding `</script><img src=x onerror=...>` came out as markup. The page is
served here (the gateway's own aiohttp app) with hostile strings in every field a peer
can fill, and read by a real headless Chromium: nothing of theirs runs or becomes an
element, and each shows as the text it is."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import sync_playwright

from edge.web.server import CSP, StatusSite
from floor.config import WebConfig
from tests.support.broker import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = [
    "</script><img src=x onerror=\"window.__pwned='img'\">",
    "<script>window.__pwned='script'</script>",
    '"><svg onload="window.__pwned=\'svg\'">',
    "&lt;b&gt;not bold&lt;/b&gt; \u2028\u2029 <!-- -->",
]


def hostile_status() -> dict[str, Any]:
    e = EVIL
    return {
        "gw": "gw-1",
        "version": e[0],
        "epoch": 1,
        "clock": {"tq": e[1]},
        "posture": {"posture": "emergency", "reason": e[2]},
        "link": {"state": "down", "last_error": e[0], "sessions": 0},
        "outbox": {"lanes": {"0": {"rows": 0}}},
        "devices": {e[1]: {"kind": "ais", "state": e[0], "rejected": {e[2]: 1}, "events": 1}},
        "bearers": {"sms": {"state": e[3], "cause": e[0], "sent": e[1], "capped": 0}},
        "ble": {"wearables": {e[2]: {"state": e[0], "battery": e[1], "rssi": e[2], "last_event": e[0]}}},
        "workers": {e[2]: e[3]},
        "life_safety": [
            {"seq": e[1], "kind": e[0], "worker": e[2], "state": e[3], "bearers": [e[0]], "at": e[1]}
        ],
        "firmware": {"jobs": {e[0]: {"state": e[1]}}},
    }


@pytest.fixture
def page_url() -> Iterator[str]:
    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def snapshot() -> dict[str, Any]:
        return hostile_status()

    async def serve() -> web.AppRunner:
        site = StatusSite(WebConfig(listen=f"127.0.0.1:{port}"), snapshot, token=None)
        runner = web.AppRunner(site.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(serve())

    def run() -> None:
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    yield f"http://127.0.0.1:{port}/"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_hostile_strings_show_as_text_and_never_run(page_url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(page_url, timeout=10) as resp:
        html = resp.read().decode()
        assert resp.headers["Content-Security-Policy"] == CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "</script><img" not in html and "<script>window" not in html and "<svg" not in html
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_url)
            page.wait_for_selector("#devices")
            page.wait_for_timeout(500)
            assert page.evaluate("window.__pwned") is None
            found = page.eval_on_selector_all(
                "#view img, #view svg, #view script", "els => els.map(e => e.outerHTML)"
            )
            assert found == []
            text = page.inner_text("body")
            for s in (EVIL[0], EVIL[2]):
                assert s in text, text  # shown as what it is
        finally:
            browser.close()
