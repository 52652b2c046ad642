"""The technician's two languages: the catalogs are complete and compiled, and what a
technician reads (status, check, errors) comes out in the language asked for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from drivers.parts import parse_config as parse
from edge.i18n import LOCALEDIR, from_accept_language, localised, normalise, problem_text, translator
from floor.errors import ConfigError
from tools.checks import examine
from tools.status_table import render, width

REPO = Path(__file__).resolve().parents[2]


def test_every_message_in_the_code_is_translated() -> None:
    # the same places the catalogs are extracted from (babel.cfg), so neither can miss a floor
    method_map = [
        (m.group(2), m.group(1))
        for m in re.finditer(r"^\[(python|jinja2): ([^\]]+)\]", (REPO / "babel.cfg").read_text(), re.M)
    ]
    assert len(method_map) >= 6
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


GW = '[gateway]\nid = "g"\nkey = "k"\nstate_dir = "s"\n'
GNSS = '[[devices]]\nid = "gnss0"\nkind = "gnss"\nport = "/dev/ttyS0"\n'
CAM = '[[devices]]\nid = "cam1"\nkind = "body_camera"\nworker = "w-1"\n'
FENCE = '[[geofences]]\nid = "h"\n'


# One of each kind of mistake the parser names: fixed messages, and messages with the
# technician's value, a range, a choice or a nested word ("an integer") in them.
@pytest.mark.parametrize(
    ("toml", "key", "value"),
    [
        (GW + '[mqtt]\nport = "x"\n', "mqtt.port", '"x"'),
        (GW + "[mqtt]\nport = 0\n", "mqtt.port", "0"),
        (GW + "[mqtt]\nport = 70000\n", "mqtt.port", "70000"),
        (GW + "[mqtt]\nkeepalive_s = -1.5\n", "mqtt.keepalive_s", "-1.5"),
        (GW + "[mqtt]\ninsecure = 1\n", "mqtt.insecure", "1"),
        (GW + '[mqtt]\nhost = "10.0.0.9"\n', "mqtt.host", "10.0.0.9"),
        (GW + '[mqtt]\ntopic_prefix = "a/#"\n', "mqtt.topic_prefix", "a/#"),
        (GW + "[mqtt]\ntls = 3\n", "mqtt.tls", ""),
        ('[gateway]\nid = "a b"\nkey = "k"\nstate_dir = "s"\n', "gateway.id", '"a b"'),
        (GW + GNSS + "baudrate = 1234\n", "devices[0].baudrate", "1234"),
        (GW + '[[devices]]\nid = "x"\nkind = "radar"\n', "devices[0].kind", '"radar"'),
        (GW + '[[devices]]\nid = "ais0"\nkind = "ais"\nurl = "http://x"\n', "devices[0].url", "http://x"),
        (
            GW + '[[devices]]\nid = "ais0"\nkind = "ais"\nurl = "udp://0.0.0.0:1"\nallow = ["x"]\n',
            "allow",
            "'x'",
        ),
        (GW + GNSS + GNSS, "devices[1].id", '"gnss0"'),
        (GW + CAM + 'address = "nope"\n', "devices[0].address", ""),
        (GW + FENCE + "polygon = [[1, 2], [3, 4], [95, 0]]\n", "geofences[0].polygon", "[95, 0]"),
        (GW + FENCE + "polygon = [[1, 2], [3, 4], [5, 0]]\nfleet = [12]\n", "geofences[0].fleet", "12"),
        (GW + '[sms]\nport = "/dev/ttyUSB2"\nnumbers = ["call me"]\n', "sms.numbers", "'call me'"),
        (GW + '[web]\nlisten = "localhost"\n', "web.listen", '"localhost"'),
        (GW + "[outbox]\nbatch_ms = [1]\n", "outbox.batch_ms", ""),
        (GW + "[gateway.extra]\n", "gateway.extra", ""),
        (GW + "[mqtt\n", "", ""),
    ],
)
def test_every_kind_of_config_mistake_reads_in_chinese(toml: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(toml, file="gw.toml", check_files=False)
    en, zh = localised(err.value, "en"), localised(err.value, "zh_CN")
    assert key in en and key in zh and value in zh, (en, zh)
    message = zh.rsplit(key + "：", 1)[-1] if key else zh
    assert any("\u4e00" <= ch <= "\u9fff" for ch in message), (en, zh)
    # no English word of the template is left (a value or a key path may hold some)
    for word in ("expected", "must", "got", "is not", "required", "an integer", "a string", "unknown"):
        assert word not in message.replace(value, ""), (en, zh)


def test_what_gridedge_check_finds_reads_in_chinese(tmp_path: Path) -> None:
    key = tmp_path / "gateway.key"
    key.write_text("k")
    key.chmod(0o644)
    cfg = parse(
        f'[gateway]\nid = "g"\nkey = "{key}"\nstate_dir = "s"\n[trust]\ncommand_key = "{tmp_path}/gone.pub"\n'
        '[[devices]]\nid = "ais0"\nkind = "ais"\nurl = "udp://0.0.0.0:10110"\n'
        '[[devices]]\nid = "sos1"\nkind = "sos_button"\nworker = "w-1"\naddress = "F0:00:00:00:00:01"\n'
        "insecure = true\n",
        file="gw.toml",
        check_files=False,
    )
    found = examine(cfg, None)
    problems = [*found.errors, *found.warnings]
    assert len(found.errors) == 2 and len(found.warnings) == 2, [str(p) for p in problems]
    texts = [problem_text(p, "zh_CN") for p in problems]
    assert any("gateway.key" in t and "chmod 600" in t and "可被属组或其他用户读取" in t for t in texts), (
        texts
    )
    assert any("trust.command_key" in t and "gone.pub 不存在" in t for t in texts), texts
    assert any("devices[ais0]" in t and "数据报" in t for t in texts) and any("insecure" in t for t in texts)
    assert [problem_text(p, "en") for p in problems] == [str(p) for p in problems]
    assert "is readable by group or others" in str(found.errors[0]) + str(found.errors[1])


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
        {
            "seq": 31,
            "kind": "sos.alarm",
            "worker": "w-042",
            "state": "delivered",
            "bearers": ["sms"],
            "at": 990_000,
        }
    ],
    "devices": {  # a receiver shows its own fix whatever its id
        "mast": {
            "kind": "gnss",
            "state": "connected",
            "last_ms": 999_000,
            "events": 12,
            "rejected": {"checksum": 1},
            "fix": {"fix": 3, "sats": 11, "lat": 21.9, "lon": 112.8},
        }
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
    "bearers": {"sms": {"state": "ready", "rssi_dbm": -71, "sent": 1, "capped": 0}},
}


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", ("Uplink", "delivered + by sms", "fix 3D, 11 satellites", "Bearer sms")),
        ("zh_CN", ("上行链路", "已送达 + 经 sms", "3D 定位，11 颗卫星", "通道 sms")),
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
        [sys.executable, "-m", "tools.cli", "check", "-c", str(tmp_path / "gw.toml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert res.returncode == 1 and "第 3 行" in res.stderr and "gateway.key：" in res.stderr, res.stderr
