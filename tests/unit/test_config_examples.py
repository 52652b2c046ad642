"""The shipped example configs load, and agree with the JSON Schema."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from edge.base.config import load

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
