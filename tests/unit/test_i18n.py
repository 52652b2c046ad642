"""The technician's two languages: the catalogs are complete and compiled, and what a
technician reads (status, check, errors) comes out in the language asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from edge.base.config import parse
from edge.base.errors import ConfigError
from edge.i18n import LOCALEDIR, from_accept_language, localised, normalise, translator
from edge.status_table import render, width

REPO = Path(__file__).resolve().parents[2]


def test_every_message_in_the_code_is_translated() -> None:
    method_map = [("edge/**.py", "python"), ("edge/web/templates/**.html", "jinja2")]
    used = {msg for _f, _l, msg, *_ in extract_from_dir(str(REPO), method_map) if isinstance(msg, str)}
    assert len(used) > 100
    with open(LOCALEDIR / "zh_CN/LC_MESSAGES/gridedge.po", "rb") as f:
        catalog = read_po(f)
    missing = sorted(m for m in used if not ((found := catalog.get(m)) is not None and found.string))
    assert not missing, f"not in the zh_CN catalog (scripts/catalogs update): {missing}"
    assert (LOCALEDIR / "zh_CN/LC_MESSAGES/gridedge.mo").exists(), "compile the catalogs: scripts/catalogs"
    assert translator("zh_CN").gettext("Uplink") == "上行链路"


def test_languages_are_chosen_from_the_environment_and_the_browser() -> None:
    assert normalise("zh_CN.UTF-8") == normalise("zh-Hans") == "zh_CN" and normalise("C.UTF-8") == "en"
    assert from_accept_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh_CN"
    assert from_accept_language("en-GB,zh-CN;q=0.5") == "en"
    assert from_accept_language("fr-FR") == "en" and from_accept_language(None) == "en"


def test_a_config_error_in_chinese_keeps_its_key_path_and_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse(
            '[gateway]\nid = "g"\nkey = "k"\nstate_dir = "s"\ntypo = 1\n', file="gw.toml", check_files=False
        )
    assert localised(err.value, "en") == "gw.toml:5: gateway.typo: unknown key"
    assert localised(err.value, "zh_CN") == "gw.toml 第 5 行: gateway.typo：未知的键"


DOC: dict[str, Any] = {
    "gw": "jm-01",
    "version": "0.1.0",
    "epoch": 3,
    "clock": {"tq": "gnss"},
    "link": {"state": "up", "sessions": 1, "last_ack_ms": 1_000_000, "last_error": ""},
    "outbox": {
        "lanes": {0: {"rows": 0}, 1: {"rows": 2}, 2: {"rows": 40}, 3: {"rows": 0}},
        "dropped": 0,
        "oldest_age_s": {2: 4.2},
    },
    "life_safety": [
        {"seq": 31, "kind": "sos.alarm", "worker": "w-042", "state": "delivered", "sms": True, "at": 990_000}
    ],
    "devices": {
        "gnss0": {"state": "connected", "last_ms": 999_000, "events": 12, "rejected": {"checksum": 1}}
    },
    "gnss": {"fix": 3, "sats": 11, "lat": 21.9, "lon": 112.8},
    "ble": {
        "wearables": {
            "sos-w042": {
                "state": "connected",
                "battery": 87,
                "rssi": -60,
                "last_event": "sos.alarm",
                "last_event_ms": 990_000,
            }
        }
    },
    "workers": {"sos-w042": "w-042"},
    "sms": {"state": "ready", "rssi_dbm": -71, "sent": 1, "capped": 0},
}


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", ("Uplink", "delivered + by SMS", "fix 3D, 11 satellites")),
        ("zh_CN", ("上行链路", "已送达 + 经短信", "3D 定位，11 颗卫星")),
    ],
)
def test_the_status_table_in_each_language(lang: str, words: tuple[str, ...]) -> None:
    text = render(DOC, lang, now_ms=1_001_000)
    for w in words:
        assert w in text, text
    assert "(oldest 4 s)" in text or "（最早 4 秒）" in text
    rows = [ln for ln in text.splitlines() if "sos-w042" in ln and "87%" in ln]
    assert rows  # the wearables table
    header = next(
        ln
        for ln in text.splitlines()
        if ln.strip().startswith(("ID", "编号")) and ("WORKER" in ln or "作业人员" in ln)
    )
    assert width(header.split("87%")[0]) > 0


def test_gridedge_check_speaks_the_technicians_language(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text('[gateway]\nid = "g"\nkey = "k"\nstate_dir = "s"\n[mqtt]\nport = "x"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))} | {"LANG": "zh_CN.UTF-8"}
    res = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check", "-c", str(tmp_path / "gw.toml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert res.returncode == 1 and "第 3 行" in res.stderr and "gateway.key：" in res.stderr, res.stderr
