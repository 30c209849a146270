"""The search-ranking blueprint deploys locally: a ranking model, its NDCG@10 gate evaluated."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from mlstack.ops.local import procs
from tests.conftest import redate_project
from tests.engine.deploy_support import loosen, run_mlstack, stop_everything

pytestmark = [pytest.mark.engine, pytest.mark.slow]

LOOSE_SLOS = {"p50_ms: 20, p95_ms: 40, p99_ms: 50": "p50_ms: 200, p95_ms: 400, p99_ms: 500",
              # each (query, document) pair has one impression row, its features valid for an
              # hour: online reads null them after that, as the point-in-time join does, so
              # only the sample's last hour could be served. The test's copy keeps them valid
              # for its whole span (training is unchanged: labels follow their impression by
              # minutes)
              "ttl: 1h": "ttl: 30d",
              # a fixed sample: the documents' newest daily snapshot is a day older than the
              # newest impression, over the 15 min freshness SLO deploy now verifies
              "feature_freshness: 15m": "feature_freshness: 3650d"}


def test_search_ranking_deploys_with_its_ndcg_gate(tmp_path):
    env = dict(os.environ, MLSTACK_HOME=str(tmp_path / "home"), PYTHONPATH="")
    project = tmp_path / "ranking"
    port = procs.free_port()

    def mlstack(*args):
        return run_mlstack(tmp_path, *args, env=env)

    mlstack("init", str(project), "--blueprint", "search-ranking")
    redate_project(project)  # online reads null values older than their views' TTLs
    spec = project / "mlstack.yaml"
    loosen(spec, LOOSE_SLOS)
    try:
        result = json.loads(mlstack("deploy", str(spec), "--json", "--port", str(port),
                                    "--duration", "3").stdout)
        stages = {s["name"]: s["status"] for s in result["stages"]}
        assert stages["evaluate"] == "done" and stages["verify"] == "done"
        assert result["metrics"]["ndcg@10"] >= 0.65
        quality = next(r for r in result["slos"] if r["slo"] == "quality ndcg@10")
        assert quality["ok"] is True
        assert result["skew"]["mismatches"] == []
        rows = [{"query_id": r["query_id"], "doc_id": r["doc_id"]}
                for r in result["example_request"]["rows"]]
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": rows}, timeout=30)
        assert answer.status_code == 200 and isinstance(answer.json()[0], float)
    finally:
        stop_everything(project, env)
