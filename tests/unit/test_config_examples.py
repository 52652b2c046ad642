"""The shipped example configs load, and agree with the JSON Schema."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from drivers.modem.part import SmsConfig
from drivers.parts import PARTS
from drivers.parts import load_config as load
from drivers.parts import parse_config as parse
from floor import config as cfg_mod
from floor.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[2] / "config"
SCHEMA = json.loads((CONFIG / "gateway.schema.json").read_text())
EXAMPLES = sorted(CONFIG.glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_matches_schema(example: Path) -> None:
    load(example, check_files=False)
    jsonschema.validate(tomllib.loads(example.read_text()), SCHEMA)


def test_schema_refuses_unknown_keys_like_the_loader() -> None:
    doc = tomllib.loads(EXAMPLES[0].read_text())
    doc["outbox"]["batchms"] = 5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)


SECTIONS = {
    "gateway": cfg_mod.GatewayConfig,
    "mqtt": cfg_mod.MqttConfig,
    "outbox": cfg_mod.OutboxConfig,
    "ble": cfg_mod.BleConfig,
    "firmware": cfg_mod.FirmwareConfig,
    "ais": cfg_mod.AisConfig,
    "trust": cfg_mod.TrustConfig,
    "sms": SmsConfig,
    "alarms": cfg_mod.AlarmsConfig,
    "posture": cfg_mod.PostureConfig,
    "web": cfg_mod.WebConfig,
}
NOT_SECTIONS = {"file", "applied", "parts", "wearables", "bearers"}  # of Config, not sections of the file


def test_the_schema_has_every_section_the_loader_reads() -> None:
    """The schema is checked against the loader, not written beside it: every section of
    the loaded Config and every bearer's section is in it, and nothing else."""
    sections = {f.name for f in dataclasses.fields(cfg_mod.Config)} - NOT_SECTIONS
    assert set(SCHEMA["properties"]) == sections | set(PARTS.bearers)
    assert set(SECTIONS) | {"devices", "geofences"} | set(PARTS.bearers) == set(SCHEMA["properties"])


def test_every_config_provision_writes_matches_the_schema(tmp_path: Path) -> None:
    one = subprocess.run(
        [sys.executable, "-m", "tools.cli", "provision", "--id", "gw-9", "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    stations = tmp_path / "stations.csv"
    stations.write_text(
        "gateway,broker,device,kind,worker,address,key,url,allow\n"
        "gw-1,127.0.0.1:1884,ais,ais,,,,udp://0.0.0.0:10110,192.168.4.20\n"
        "gw-1,,sos,sos_button,w-1,F0:00:00:00:00:01,00112233445566778899aabbccddeeff,,\n"
    )
    fleet = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "provision",
            "--from",
            str(stations),
            "--out",
            str(tmp_path / "fleet"),
        ],
        capture_output=True,
        text=True,
    )
    assert fleet.returncode == 0, fleet.stderr
    for config in (tmp_path / "one" / "gateway.toml", tmp_path / "fleet" / "gw-1" / "gateway.toml"):
        jsonschema.validate(tomllib.loads(config.read_text()), SCHEMA)


def test_the_annotated_example_shows_every_section_and_key() -> None:
    """config/gateway.toml says it shows every key: each section and each of its keys is
    there, set or commented out."""
    text = (CONFIG / "gateway.toml").read_text()
    for section, spec in SCHEMA["properties"].items():
        assert re.search(rf"^#? ?\[{{1,2}}{section}\]{{1,2}}", text, re.M), section
        keys = spec.get("properties") or spec.get("items", {}).get("properties") or {}
        for key in keys:
            shown = rf"^#? ?{key} = |^#? ?\[{section}\.{key}\]"  # a key, or a table of data keys
            assert re.search(shown, text, re.M), f"{section}.{key}"


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_lists_exactly_the_dataclass_fields(section: str) -> None:
    """One source: a key added to a dataclass (and so to the loader) must be in the schema."""
    props = set(SCHEMA["properties"][section]["properties"])
    assert props == {f.name for f in dataclasses.fields(SECTIONS[section])}


def test_the_starter_config_has_the_dataclass_defaults(tmp_path: Path) -> None:
    out = tmp_path / "gw"
    res = subprocess.run(
        [sys.executable, "-m", "tools.cli", "provision", "--id", "gw-9", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    cfg = load(out / "gateway.toml")
    assert cfg.mqtt == cfg_mod.MqttConfig() and cfg.outbox == cfg_mod.OutboxConfig()


def test_a_bracket_or_hash_inside_a_quoted_value_keeps_error_lines_right() -> None:
    text = (
        '[gateway]\nid = "gw-1"\nkey = "k"\nstate_dir = "s[1" # a [ in a string\n'
        '[mqtt]\ntls_ca = "ca#[.crt"\nport = "x"\n'
    )
    with pytest.raises(ConfigError) as err:
        parse(text, check_files=False)
    assert err.value.line == 7 and err.value.path == "mqtt.port"


def test_the_schemas_kinds_and_bearers_are_the_registrys() -> None:
    """One list per closed set: the kinds a schema-checked config may name, and the bearer
    sections, are exactly the parts the gateway finds."""
    refs = [r["$ref"].rpartition("/")[2] for r in SCHEMA["properties"]["devices"]["items"]["oneOf"]]
    stream_kinds = {SCHEMA["$defs"][r]["properties"]["kind"]["const"] for r in refs if r != "wearable"}
    assert stream_kinds == set(PARTS.devices)
    assert set(SCHEMA["$defs"]["wearable"]["properties"]["kind"]["enum"]) == set(PARTS.wearables)
    assert set(PARTS.bearers) <= set(SCHEMA["properties"])


@pytest.mark.parametrize("kind", sorted(PARTS.devices))
def test_a_stream_parts_keys_are_in_its_schema(kind: str) -> None:
    props = set(SCHEMA["$defs"][kind]["properties"])
    keys = {f.name for f in dataclasses.fields(PARTS.devices[kind].config)} - {"source"}
    assert keys <= props and {"port", "url"} & props
