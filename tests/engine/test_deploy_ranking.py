"""The search-ranking blueprint deploys locally: a ranking model, its NDCG@10 gate evaluated,
its skew check and SLO load run per group on /rank, and /rank answers over real HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from mlstack.ops.local import procs
from tests.engine.deploy_support import deploy_env, run_mlstack, stop_everything

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_search_ranking_deploys_with_its_ndcg_gate(tmp_path):
    env = deploy_env(tmp_path)
    project = tmp_path / "ranking"
    port = procs.free_port()

    def mlstack(*args):
        return run_mlstack(tmp_path, *args, env=env)

    mlstack("init", str(project), "--blueprint", "search-ranking")  # dates the sample now
    spec = project / "mlstack.yaml"  # as shipped: its SLOs, TTLs and freshness
    try:
        result = json.loads(mlstack("deploy", str(spec), "--json", "--port", str(port),
                                    "--duration", "3").stdout)
        stages = {s["name"]: s["status"] for s in result["stages"]}
        assert stages["evaluate"] == "done" and stages["verify"] == "done"
        assert result["metrics"]["ndcg@10"] >= 0.65
        slos = {row["slo"]: row for row in result["slos"]}
        for name in ("latency p50", "latency p95", "latency p99", "throughput",
                     "quality ndcg@10", "freshness document_stats", "freshness query_document"):
            assert slos[name]["ok"] is True, (name, slos[name], result["load"]["contention"])
        assert result["skew"]["mismatches"] == []
        assert result["skew"]["groups"] >= 1  # served order = offline order, group by group
        stage = next(s for s in result["stages"] if s["name"] == "skew_check")
        assert "/rank order = offline order" in stage["detail"]
        assert result["example_endpoint"] == "rank"
        body = result["example_request"]
        query_id, candidates = body["query_id"], body["candidates"]
        assert len(candidates) > 3 and set(candidates[0]) == {"doc_id"}
        base = f"http://127.0.0.1:{port}"

        def rank(payload):
            return httpx.post(f"{base}/rank", json=payload, timeout=30)

        unknown = {"doc_id": 10**9}  # no online features: listed last, score null
        answer = rank({"query_id": query_id, "candidates": [unknown, *candidates]})
        assert answer.status_code == 200, answer.text
        ranked = answer.json()
        assert ranked["query_id"] == query_id
        assert ranked["ranked"][-1] == {"doc_id": 10**9, "score": None}
        scored = ranked["ranked"][:-1]
        assert sorted(c["doc_id"] for c in scored) == sorted(c["doc_id"] for c in candidates)
        scores = [c["score"] for c in scored]
        assert all(isinstance(v, float) for v in scores) and scores == sorted(scores,
                                                                             reverse=True)
        # each score is the row's /predict score
        rows = [{"query_id": query_id, **c} for c in candidates]
        predicted = httpx.post(f"{base}/predict", json={"rows": rows}, timeout=30)
        assert predicted.status_code == 200, predicted.text
        by_doc = {r["doc_id"]: v for r, v in zip(rows, predicted.json(), strict=True)}
        assert all(abs(c["score"] - by_doc[c["doc_id"]]) <= 1e-9 for c in scored)

        top = rank({"query_id": query_id, "candidates": candidates, "top_k": 3}).json()
        assert top["ranked"] == scored[:3]
        assert rank({"query_id": query_id, "candidates": []}).json() == {
            "query_id": query_id, "ranked": []}
        # refused with 400: unknown keys at the top and in a candidate, a mistyped key,
        # a top_k below 1, a missing group key
        for bad in ({"query_id": query_id, "candidates": candidates, "extra": 1},
                    {"query_id": query_id, "candidates": [{"doc_id": 1, "query_id": 2}]},
                    {"query_id": str(query_id), "candidates": candidates},
                    {"query_id": query_id, "candidates": candidates, "top_k": 0},
                    {"candidates": candidates}):
            assert rank(bad).status_code == 400, bad
        assert httpx.post(f"{base}/predict", json={"rows": rows, "query_id": query_id},
                          timeout=30).status_code == 400
        schemas = httpx.get(f"{base}/docs.json", timeout=30).json()["components"]["schemas"]
        assert schemas["RankRequest"]["additionalProperties"] is False
        assert set(schemas["RankRequest"]["properties"]) == {"query_id", "candidates", "top_k"}
        assert set(schemas["RankedCandidate"]["properties"]) == {"doc_id", "score"}
    finally:
        stop_everything(project, env)
