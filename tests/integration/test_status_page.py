"""The technician's status page in a real headless Chromium (Debian's, driven by
Playwright), against the gateway process with a simulated SOS button; and /metrics,
scraped and read with prometheus_client's own parser."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_wearables import Rig
from tests.support.broker import Mosquitto, free_port
from tests.support.wearables import button

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("GRIDEDGE_SCREENSHOTS")  # a folder: write the docs' screenshots there


def page_token(tmp_path: Path) -> tuple[str, Path]:
    """A page token and its file, private as provision writes it."""
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "web.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return token, token_file


@pytest.fixture
def site(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Rig, str, str]]:
    token, token_file = page_token(tmp_path)
    port = free_port()
    # a maintenance interface (every address): every request needs the token
    web = f'[web]\nlisten = "0.0.0.0:{port}"\ntoken_file = "{token_file}"\n'
    r = Rig(broker, tmp_path, [button("btn-1", 1, "w-7")], extra=web)
    r.gw.start()
    r.gw.wait_status(lambda d: d["link"]["state"] == "up")
    r.connected("btn-1")
    yield r, f"http://127.0.0.1:{port}", token
    r.stop()


def get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def families_covering(char: str) -> set[str]:
    out = subprocess.run(
        ["fc-list", f":charset={ord(char):x}", "family"], capture_output=True, text=True, check=True
    ).stdout
    return {f.strip() for line in out.splitlines() for f in line.split(",")}


def fonts_used(page: Page) -> set[str]:
    """The platform fonts Chromium drew the page's text with (DevTools protocol)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    used: set[str] = set()
    for sel in ("h1", "th", "td", "h2", "span", "option"):
        for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": sel})["nodeIds"]:
            for font in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]:
                used.add(font["familyName"])
    return used


def test_the_status_page_live_in_both_languages(site: tuple[Rig, str, str]) -> None:
    rig, base, token = site
    status, body = get(base + "/")
    assert status == 401 and "token" in body  # no anonymous access beyond loopback
    assert get(base + "/metrics")[0] == 401
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB", viewport={"width": 390, "height": 844})  # a phone
            page.goto(f"{base}/?token={token}")
            assert "token" not in page.url  # kept in a cookie, gone from the address bar
            page.wait_for_selector('#wearables tr[data-device="btn-1"] [data-state="connected"]')
            assert page.locator("#live").inner_text() == "live"
            assert "Wearables" in page.inner_text("#wearables h2")
            # a press shows on the page by itself (server-sent events)
            pressed = time.monotonic()
            counter = rig.sim.call("press", device="btn-1", type="long")["counter"]
            page.wait_for_selector("#alarms tr[data-seq]", timeout=5000)
            shown_ms = (time.monotonic() - pressed) * 1000
            print(f"SOS press to the page showing it: {shown_ms:.0f} ms")
            row = page.inner_text("#alarms tr[data-seq]")
            assert "sos.alarm" in row and "w-7" in row
            assert counter >= 1
            if SCREENSHOTS:
                page.screenshot(path=f"{SCREENSHOTS}/status-en.png", full_page=True)
            # the same page in Chinese, switched on the page, every glyph drawn from a font that has it
            page.select_option("#lang", "zh_CN")
            page.wait_for_function("document.documentElement.lang === 'zh-CN'")
            assert page.inner_text("#wearables h2") == "穿戴设备" and page.title() == "gridedge 状态"
            page.evaluate("events.close()")  # hold the view still while its fonts are read
            page.evaluate("render()")
            text = page.inner_text("body")
            cjk = {c for c in text if ord(c) >= 0x2E80}
            assert len(cjk) > 20, text
            used = fonts_used(page)
            uncovered = sorted(c for c in cjk if not (families_covering(c) & used))
            assert not uncovered, f"drawn without a font that has them: {uncovered} (fonts used: {used})"
            if SCREENSHOTS:
                page.screenshot(path=f"{SCREENSHOTS}/status-zh.png", full_page=True)
            # a browser asking for Chinese gets it from the first page
            zh = browser.new_page(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
            zh.goto(f"{base}/?token={token}")
            assert zh.inner_text("h1") == "gridedge 状态"
            # the button is pulled out of range: the page shows it gone
            rig.sim.call("away", device="btn-1")
            zh.wait_for_selector(
                '#wearables tr[data-device="btn-1"] [data-state="disconnected"]', timeout=30_000
            )
            assert "已断开" in zh.inner_text('#wearables tr[data-device="btn-1"]')
        finally:
            browser.close()


def test_metrics_scraped_and_parsed_by_prometheus_client(site: tuple[Rig, str, str]) -> None:
    rig, base, token = site
    rig.press("btn-1")
    rig.col.wait_for(lambda _ms: bool(rig.col.up("sos.alarm")))
    rig.gw.wait_status(lambda d: d["link"]["acked_by_kind"].get("sos.alarm") == 1)
    status, text = get(base + "/metrics", token)
    assert status == 200
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples
    }

    def value(name: str, **labels: Any) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert fams["gridedge_outbox_records"].type == "gauge"
    assert fams["gridedge_messages_published"].type == "counter"  # exposed as ..._total
    assert value("gridedge_messages_acked_total", kind="sos.alarm") == 1
    assert value("gridedge_messages_published_total", kind="sos.alarm") >= 1
    # an acknowledged row's delete may still be waiting to ride along with a commit
    assert value("gridedge_outbox_records", lane="life_safety") in (0, 1)
    assert {
        lane for (n, lab), _v in samples.items() if n == "gridedge_outbox_records" for _k, lane in lab
    } == {
        "life_safety",
        "event",
        "telemetry",
        "bulk",
    }
    assert value("gridedge_uplink_up") == 1
    assert value("gridedge_device_up", device="btn-1") == 1
    assert value("gridedge_wearable_battery_ratio", device="btn-1") == pytest.approx(0.87)
    assert "gridedge_outbox_oldest_age_seconds" in fams and "gridedge_rejections" in fams
    assert value("gridedge_info", gw="gw-test-1", version="0.1.0") == 1


FITS = """() => {
  const over = [];
  for (const s of document.querySelectorAll("section")) {
    for (const t of s.querySelectorAll("table")) {
      if (t.scrollWidth > s.clientWidth + 1) over.push(`${s.id}: ${t.scrollWidth} > ${s.clientWidth}`);
    }
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) over.push("the page scrolls sideways");
  for (const e of document.querySelectorAll("[data-state]")) {  // one line, not a column of characters
    if (e.getClientRects().length > 1) over.push(`state ${e.textContent} wraps`);
  }
  return over;
}"""


@pytest.fixture
def bad_day(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Rig, str, str]]:
    """A gateway on a bad day: its GNSS receiver unplugged, an SOS raised, the broker gone."""
    token, token_file = page_token(tmp_path)
    port = free_port()
    web = (
        f'[web]\nlisten = "0.0.0.0:{port}"\ntoken_file = "{token_file}"\n'
        '[[devices]]\nid = "gnss-mast"\nkind = "gnss"\nport = "/dev/ttyGONE9"\n'
    )
    wearables = [button("btn-1", 1, "w-7"), button("btn-2", 2, "w-8")]
    r = Rig(broker, tmp_path, wearables, extra=web)
    r.gw.start()
    r.gw.wait_status(lambda d: d["link"]["state"] == "up")
    r.connected("btn-1", "btn-2")
    r.sim.call("press", device="btn-1", type="long")
    r.gw.wait_status(lambda d: bool(d["life_safety"]))
    broker.kill()
    r.gw.wait_status(lambda d: d["link"]["state"] != "up" and bool(d["link"]["last_error"]), timeout=30)
    try:
        yield r, f"http://127.0.0.1:{port}", token
    finally:
        broker.start()
        r.stop()


def test_the_page_fits_a_phone_and_a_laptop_and_says_why_things_are_down(
    bad_day: tuple[Rig, str, str],
) -> None:
    """At a phone's 390 px and a laptop's 1280 px, in English and in Chinese: no table is
    wider than its card and no state wraps a character a line; the missing receiver and
    the uplink say why they are down; the language asked for with the token stays, and
    the token's cookie outlives the browser session."""
    rig, base, token = bad_day
    status, body = get(base + "/")
    assert status == 401 and f"{base.removeprefix('http://')}/?token=" in body  # where to go, said
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for width, height, name in ((390, 844, "phone"), (1280, 900, "laptop")):
                for lang in ("en", "zh_CN"):
                    context = browser.new_context(viewport={"width": width, "height": height})
                    page = context.new_page()
                    page.goto(f"{base}/?token={token}&lang={lang}")
                    assert "token" not in page.url and f"lang={lang}" in page.url
                    page.wait_for_selector('#devices tr[data-device="gnss-mast"] [data-why]')
                    page.wait_for_selector("#gateway [data-uplink] [data-why]")
                    page.wait_for_selector("#alarms tr[data-seq]")
                    if lang == "zh_CN":
                        assert page.inner_text("h1") == "gridedge 状态"
                    reason = page.inner_text('#devices tr[data-device="gnss-mast"] [data-why]')
                    assert "/dev/ttyGONE9" in reason and "No such file" in reason and "Errno" not in reason
                    assert page.inner_text("#gateway [data-uplink] [data-why]")
                    assert page.evaluate(FITS) == [], (name, lang)
                    cookie = next(c for c in context.cookies() if c["name"] == "gridedge_token")
                    assert cookie["expires"] > time.time() + 29 * 86400  # not a session cookie
                    if SCREENSHOTS:
                        page.screenshot(path=f"{SCREENSHOTS}/status-{name}-{lang}.png", full_page=True)
                    context.close()
        finally:
            browser.close()
    status_doc = rig.gw.status()
    assert status_doc["devices"]["gnss-mast"]["failures"] >= 1
    log = rig.gw.log.read_text()
    # the missing port: said once, then counted, not every few seconds
    assert log.count("cannot open /dev/ttyGONE9") == 1, log[-3000:]
