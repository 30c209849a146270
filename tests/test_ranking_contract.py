"""The ranking service's contract as compiled: /rank takes the group key and the candidates'
keys (and request fields), answers candidates with scores; names that would clash with
/rank's own are refused by lint."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.loader import load_spec_file
from tests.conftest import BLUEPRINTS

RANKING = load_spec_file(BLUEPRINTS / "search-ranking" / "mlstack.yaml").data


def _analyze(doc, tmp_path):
    spec = tmp_path / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return analyze_spec(spec)


def test_rank_request_and_answer_models(tmp_path):
    analysis = _analyze(RANKING, tmp_path)
    assert analysis.diagnostics == []
    service = compile_system(analysis.system, CompileOptions(project_dir=".."))[
        "service/service.py"].decode()
    assert "class RankRequest(bentoml.IODescriptor):" in service
    assert "    candidates: list[Candidate] = Field(max_length=MAX_REQUEST_ROWS)" in service
    assert "    top_k: int | None = Field(None, ge=1, strict=True)" in service
    assert "    ranked: list[RankedCandidate]" in service
    assert "@bentoml.api(input_spec=RankRequest)" in service
    # the candidates carry the request keys other than the group key
    candidate = service[service.index("class Candidate"):service.index("class RankRequest")]
    assert "doc_id: int" in candidate and "query_id" not in candidate


def test_other_tasks_have_no_rank_endpoint(tmp_path):
    churn = load_spec_file(BLUEPRINTS / "churn" / "mlstack.yaml").data
    service = compile_system(_analyze(churn, tmp_path).system,
                             CompileOptions(project_dir=".."))["service/service.py"].decode()
    assert "RankRequest" not in service and "def rank(" not in service


def test_a_candidate_field_named_score_is_refused(tmp_path):
    doc = copy.deepcopy(RANKING)
    doc["features"]["request_sources"] = [{"name": "context", "fields": {"score": "float64"}}]
    doc["sources"][2]["columns"]["score"] = "float64"
    doc["model"]["features"].append("context.score")
    errors = _analyze(doc, tmp_path).errors
    assert [(d.code, d.pointer) for d in errors] == [("MLS901", "/model/group_by")]
    assert "'score'" in errors[0].message


def test_the_rank_endpoint_is_documented_in_the_services_openapi(tmp_path):
    """The compiled search-ranking service's OpenAPI (read from the service class, no model
    needed): /rank's request refuses unknown keys and its answer lists ranked candidates."""
    pytest.importorskip("bentoml")
    tree = tmp_path / "tree"
    shutil.copytree(Path(__file__).parent.parent / "generated" / "search-ranking", tree)
    probe = ("import json, service.service as m; "
             "print(json.dumps(m.SearchRankingService.openapi_spec.asdict()))")
    repo = str(Path(__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), repo]),
                                 "BENTOML_HOME": str(tmp_path / "bentoml")})
    assert result.returncode == 0, result.stderr[-3000:]
    spec = json.loads(result.stdout.strip().splitlines()[-1])
    schemas = spec["components"]["schemas"]
    request = schemas["RankRequest"]
    assert request["additionalProperties"] is False
    assert request["required"] == ["query_id", "candidates"]
    assert request["properties"]["candidates"]["maxItems"] == 256
    assert schemas["Candidate"]["additionalProperties"] is False
    answer = spec["paths"]["/rank"]["post"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    if "$ref" in answer:
        answer = schemas[answer["$ref"].rsplit("/", 1)[1]]
    assert answer["properties"]["ranked"]["items"] == {
        "$ref": "#/components/schemas/RankedCandidate"}
    assert set(schemas["RankedCandidate"]["properties"]) == {"doc_id", "score"}
    assert "/predict" in spec["paths"]
