"""The JSON Schema (schemas/mlstack.schema.json): in sync with the models, a valid Draft
2020-12 schema, accepts every blueprint, and rejects what lint rejects as unknown keys."""

from __future__ import annotations

import json
import typing

import pytest
from jsonschema import Draft202012Validator
from pydantic import ConfigDict, TypeAdapter, ValidationError

from mlstack.cli.main import main
from mlstack.frontend.loader import load_spec_file
from mlstack.frontend.schema import SCHEMA_FILE, spec_json_schema, spec_json_schema_text
from mlstack.frontend.spec import models
from tests.conftest import BLUEPRINTS, REPO
from tests.test_lint_corpus import FILES, _expectation

CHECKED_IN = REPO / "schemas" / SCHEMA_FILE
SPECS = sorted(BLUEPRINTS.glob("*/mlstack.yaml"))
MISSPELT = [p for p in FILES if _expectation(p)[0] == "MLS101"]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(CHECKED_IN.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_checked_in_schema_is_not_stale():
    assert CHECKED_IN.read_text() == spec_json_schema_text(), (
        "schemas/mlstack.schema.json is stale: run `mlstack schema`")


def test_schema_check_flag(tmp_path):
    assert main(["schema", "--check", "-o", str(CHECKED_IN)]) == 0
    stale = tmp_path / "old.json"
    stale.write_text("{}\n")
    assert main(["schema", "--check", "-o", str(stale)]) == 1


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_schema_accepts_every_blueprint(spec, validator):
    errors = sorted(validator.iter_errors(load_spec_file(spec).data), key=str)
    assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.parent.name)
def test_blueprints_carry_the_schema_modeline(spec):
    first = spec.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../schemas/mlstack.schema.json"


def test_corpus_has_misspelt_key_cases():
    assert len(MISSPELT) >= 4


@pytest.mark.parametrize("path", MISSPELT, ids=lambda p: p.stem)
def test_schema_rejects_misspelt_keys(path, validator):
    data = load_spec_file(path).data
    messages = [e.message for e in validator.iter_errors(data)]
    assert messages, f"{path.name} validates against the schema"


def test_every_field_is_described():
    schema = spec_json_schema()
    undescribed = [f"{name}.{key}" for name, model in schema["$defs"].items()
                   for key, prop in model.get("properties", {}).items()
                   if not prop.get("description")]
    undescribed += [key for key, prop in schema["properties"].items()
                    if not prop.get("description")]
    assert undescribed == []


@pytest.mark.parametrize(("pointer", "good", "bad"), [
    ("FeatureView/ttl", ["15m", "1h30m", "30d", 3600], ["7days", "", "15 m", 0, "m"]),
    ("Evaluation/gates", [">= 0.80", "< 50", 0.8, "== 1"], [">= high", "=> 0.8", "auc"]),
    ("Training/schedule", ["@daily", "0 3 * * *", "*/5 * * * *", "0-59/5 * * 1,6,12 0-7",
                           "05 023 31 12 7", "3/5 * * * *"],
     ["@sometimes", "0 3 * *", "99 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *",
      "0 0 * * 8", "*/0 * * * *", "1,,2 * * * *", "- * * * *", "0 3 * * * *"]),
    ("FileSource/path", ["data/x.parquet", "x.csv", "a/b/c.csv"],
     ["../x.csv", "/etc/passwd", "a/../../x", "C:/x.csv", "~/x.csv", "s3://b/x"]),
    ("ServingResources/memory", ["512Mi", "4Gi", "1.5Ti"], ["4GB", "4", "Gi"]),
    ("Target/region", ["us-east-1", "europe-west4", "us-gov-west-1"], ["US-EAST-1", "east"]),
])
def test_scalar_patterns_agree_with_the_models(pointer, good, bad):
    """The schema's patterns accept and refuse what the models accept and refuse."""
    schema = spec_json_schema()
    model_name, key = pointer.split("/")
    prop = schema["$defs"][model_name]["properties"][key]
    info = getattr(models, model_name).model_fields[key]
    annotation = typing.Annotated[info.annotation, *info.metadata] if info.metadata else (
        info.annotation)
    if model_name == "Evaluation":  # a mapping metric -> gate: check the gate
        prop = next(iter(prop["patternProperties"].values()))
        annotation = typing.get_args(annotation)[1]
    schema_check = Draft202012Validator({**prop, "$defs": schema["$defs"]})
    model_check = TypeAdapter(annotation, config=ConfigDict(strict=True))

    def model_accepts(value) -> bool:
        try:
            model_check.validate_python(value)
        except ValidationError:
            return False
        return value is not None

    assert [v for v in good if not schema_check.is_valid(v)] == []
    assert [v for v in bad if schema_check.is_valid(v)] == []
    assert [v for v in good if not model_accepts(v)] == []
    assert [v for v in bad if model_accepts(v)] == []


def test_schema_rejects_a_misspelt_metric_key(validator):
    spec = load_spec_file(SPECS[0]).data
    spec = {**spec, "evaluation": {**spec["evaluation"], "gates": {"AUC score": ">= 0.8"}}}
    assert not validator.is_valid(spec)


def test_a_cron_value_out_of_range_is_refused_at_its_line_and_column(tmp_path):
    """'99 * * * *' has five fields of cron characters, but no minute 99: lint names the
    field and the range where the schedule is written, not the orchestrator at run time."""
    from mlstack.frontend.analysis import analyze_spec

    text = (BLUEPRINTS / "churn" / "mlstack.yaml").read_text(encoding="utf-8")
    assert '  schedule: "@daily"\n' in text
    spec = tmp_path / "mlstack.yaml"
    spec.write_text(text.replace('  schedule: "@daily"\n', '  schedule: "0 24 * * *"\n'))
    line = spec.read_text().splitlines().index('  schedule: "0 24 * * *"') + 1
    found = [d for d in analyze_spec(spec).diagnostics if "not a schedule" in d.message]
    assert len(found) == 1, [d.message for d in analyze_spec(spec).diagnostics]
    assert "its hour field '24' has 24: it takes 0 to 23" in found[0].message
    assert found[0].location.line == line
