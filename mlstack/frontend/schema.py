"""The JSON Schema of the spec, exported from the spec models (schemas/mlstack.schema.json)."""

from __future__ import annotations

import json
from typing import Any

SCHEMA_ID = "https://mlstack.dev/schemas/mlstack.schema.json"
SCHEMA_FILE = "mlstack.schema.json"


def _close_pattern_maps(node: object) -> None:
    """A mapping whose keys must match a pattern (metric: gate) admits no other key."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_pattern_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_maps(value)


def spec_json_schema() -> dict[str, Any]:
    from mlstack.frontend.spec.models import SystemSpec

    schema = SystemSpec.model_json_schema(by_alias=True, mode="validation")
    _close_pattern_maps(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    return schema


def spec_json_schema_text() -> str:
    return json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
