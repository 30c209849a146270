"""Machine formats of lint: SARIF 2.1.0 (code scanning), GitHub workflow annotations, JSON."""

from __future__ import annotations

import json
import re

import pytest

from mlstack.cli.main import main
from mlstack.diagnostics.codes import CODES
from mlstack.diagnostics.diagnostic import Diagnostic, Location, Severity
from mlstack.diagnostics.formats import render_github, render_sarif
from tests.test_lint_corpus import CORPUS

SARIF_LEVELS = {"none", "note", "warning", "error"}
SPECS = [CORPUS / "schema_unknown_top_key.yaml", CORPUS / "ref_unknown_entity.yaml",
         CORPUS / "slo_ttl_shorter_than_freshness.yaml", CORPUS / "model_unknown_param.yaml"]


def assert_sarif_2_1_0(doc: dict) -> None:
    """The properties SARIF 2.1.0 requires (and code scanning reads), checked one by one."""
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(doc["runs"], list) and doc["runs"]
    for run in doc["runs"]:
        driver = run["tool"]["driver"]
        assert isinstance(driver["name"], str) and driver["name"]
        rules = driver["rules"]
        ids = [r["id"] for r in rules]
        assert len(ids) == len(set(ids)), "rule ids are unique"
        for rule in rules:
            assert rule["shortDescription"]["text"]
            assert rule["fullDescription"]["text"]
        assert isinstance(run["results"], list)
        for result in run["results"]:
            assert result["ruleId"] in ids
            assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
            assert result["level"] in SARIF_LEVELS
            assert isinstance(result["message"]["text"], str) and result["message"]["text"]
            assert result["locations"]
            for location in result["locations"]:
                physical = location["physicalLocation"]
                uri = physical["artifactLocation"]["uri"]
                assert isinstance(uri, str) and uri and "\\" not in uri
                region = physical["region"]
                assert isinstance(region["startLine"], int) and region["startLine"] >= 1
                assert isinstance(region["startColumn"], int) and region["startColumn"] >= 1


def test_lint_sarif_output_has_the_sarif_2_1_0_shape(capsys):
    assert main(["lint", "--format", "sarif", *map(str, SPECS)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert_sarif_2_1_0(doc)
    results = doc["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"MLS101", "MLS201", "MLS403", "MLS305"}
    first = next(r for r in results if r["ruleId"] == "MLS101")
    location = first["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"].endswith("tests/bad_specs/schema_unknown_top_key.yaml")
    assert (location["region"]["startLine"], location["region"]["startColumn"]) == (5, 1)
    assert "did you mean 'metadata'?" in first["message"]["text"]
    assert {r["level"] for r in results} == {"error", "warning"}


def test_sarif_of_a_clean_run_is_still_valid(repo, capsys):
    assert main(["lint", "--format", "sarif", str(repo / "blueprints" / "churn")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert_sarif_2_1_0(doc)
    assert doc["runs"][0]["results"] == []


def test_sarif_uses_file_uris_for_absolute_paths():
    d = Diagnostic("MLS101", Severity.ERROR, "x", Location("/tmp/a b/spec.yaml", 2, 3))
    doc = json.loads(render_sarif([d]))
    assert_sarif_2_1_0(doc)
    uri = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri["uri"] == "file:///tmp/a%20b/spec.yaml"


ANNOTATION_RE = re.compile(r"^::(error|warning) file=([^,]*),line=(\d+),col=(\d+),"
                           r"title=(MLS\d{3})::(.+)$")


def test_github_annotations(capsys):
    assert main(["lint", "--format", "github", *map(str, SPECS)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines
    parsed = [ANNOTATION_RE.match(line) for line in lines]
    assert all(parsed), lines
    by_code = {m.group(5): m for m in parsed}
    top = by_code["MLS101"]
    assert top.group(1) == "error" and top.group(2).endswith("schema_unknown_top_key.yaml")
    assert (top.group(3), top.group(4)) == ("5", "1")
    assert by_code["MLS403"].group(1) == "warning"


def test_github_annotations_escape_what_would_break_the_command():
    d = Diagnostic("MLS103", Severity.ERROR, "50% of a, b: c\nnext line",
                   Location("dir,x/a:b.yaml", 1, 1), hint="h")
    line = render_github([d]).rstrip("\n")
    assert "\n" not in line
    assert line.startswith("::error file=dir%2Cx/a%3Ab.yaml,line=1,col=1,title=MLS103::")
    assert line.endswith("50%25 of a, b: c%0Anext line (hint: h)")


def test_json_output(capsys):
    assert main(["lint", "--format", "json", str(SPECS[0])]) == 1
    doc = json.loads(capsys.readouterr().out)
    (first,) = [d for d in doc["diagnostics"] if d["code"] == "MLS101"]
    assert first["line"] == 5 and first["column"] == 1 and first["severity"] == "error"
    assert first["pointer"] == "/metadatta" and first["hint"] == "did you mean 'metadata'?"
    assert set(first) == {"code", "severity", "message", "file", "line", "column", "pointer",
                          "hint"}


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_renders_as_a_sarif_rule(code):
    d = Diagnostic(code, Severity.WARNING, "m", Location("a.yaml"))
    assert_sarif_2_1_0(json.loads(render_sarif([d])))
