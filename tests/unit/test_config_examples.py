"""The shipped example configs load, and agree with the JSON Schema."""

from __future__ import annotations

import dataclasses
import json
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
}


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
