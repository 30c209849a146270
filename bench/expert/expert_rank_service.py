"""The expert baseline of /rank (issue 20): search-ranking's ranking endpoint as a skilled
engineer writes it by hand, built like expert_service.py (the churn one).

FastAPI on uvicorn (uvloop, httptools, no access log), 2 workers like the generated service,
a strict pydantic request, an orjson response; Feast `get_online_features` with the feature
service read once, a value older than its view's TTL (query_document 1 day, document_stats
2 days) is null, as is an unknown key, and a candidate with a null is ranked last with a null
score; the same fitted model (LGBMRanker from the BentoML model store) exported with
onnxmltools, on ONNX Runtime, 1 thread. Candidates are sorted by score, descending (ties in
request order), the unscored after them in request order, and cut to top_k.

    uvicorn expert_rank_service:app --workers 2 --loop uvloop --http httptools --no-access-log

    POST /rank {"query_id": 7, "candidates": [{"doc_id": 1}, ...], "top_k": 10}
         -> {"query_id": 7, "ranked": [{"doc_id": 1, "score": 0.4}, ...]}

Environment: MLSTACK_STATE_DIR (Feast registry + online store), MLSTACK_MODEL_TAG, BENTOML_HOME.
"""

import os
import time

import bentoml
import numpy as np
import onnxmltools
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request, Response
from feast import FeatureStore, RepoConfig
from onnxmltools.convert.common.data_types import FloatTensorType
from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATE_DIR = os.environ["MLSTACK_STATE_DIR"]
# feature -> its view's TTL (seconds)
TTL = {"bm25_score": 86400, "title_match": 86400, "pair_click_rate": 86400,
       "quality_score": 2 * 86400, "clicks_7d": 2 * 86400, "age_days": 2 * 86400}


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    doc_id: int


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    query_id: int
    candidates: list[Candidate] = Field(max_length=256)
    top_k: int | None = Field(None, ge=1)


store = FeatureStore(config=RepoConfig(
    project="search_ranking", provider="local", entity_key_serialization_version=3,
    registry={"registry_type": "file", "path": f"{STATE_DIR}/feast_registry.db"},
    online_store={"type": "sqlite", "path": f"{STATE_DIR}/feast_online_store.db"},
    offline_store={"type": "duckdb"}))
features = store.get_feature_service("search_ranking_model")
model = bentoml.sklearn.load_model(os.environ["MLSTACK_MODEL_TAG"])
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(
    onnxmltools.convert_lightgbm(model, initial_types=[("X", FloatTensorType([None, 7]))],
                                 zipmap=False).SerializeToString(),
    options, providers=["CPUExecutionProvider"])
app = FastAPI()


def score_pairs(query_ids: list[int], doc_ids: list[int]) -> list[float | None]:
    """The model's score of each (query, document) pair; None without fresh features."""
    got = store.get_online_features(features=features, entity_rows=[
        {"query_id": q, "doc_id": d} for q, d in zip(query_ids, doc_ids, strict=True)
    ]).to_dict(include_event_timestamps=True)
    now = time.time()
    ok = [all(got[f][i] is not None and got[f + "__ts"][i] >= now - ttl
              for f, ttl in TTL.items()) for i in range(len(doc_ids))]
    out: list[float | None] = [None] * len(doc_ids)
    rows = [i for i, good in enumerate(ok) if good]
    if rows:
        bm25, title, clicks_rate, quality, clicks, age = (
            np.array([got[f][i] for i in rows], np.float64) for f in TTL)
        X = np.column_stack([bm25, title, clicks_rate, quality, age, bm25 * quality,
                             np.log1p(clicks)])
        finite = np.isfinite(X).all(axis=1)
        rows = [i for i, f in zip(rows, finite.tolist(), strict=True) if f]
        if rows:
            scores = session.run(None, {"X": X[finite].astype(np.float32)})[0]
            for i, s in zip(rows, scores.reshape(-1).tolist(), strict=True):
                out[i] = s
    return out


def ranking(query_id: int, doc_ids: list[int], scores: list[float | None],
            top_k: int | None) -> bytes:
    """Best first (ties in request order), the unscored last; the first top_k."""
    order = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: -scores[i])
    order += [i for i, s in enumerate(scores) if s is None]
    if top_k is not None:
        order = order[:top_k]
    return orjson.dumps({"query_id": query_id,
                         "ranked": [{"doc_id": doc_ids[i], "score": scores[i]} for i in order]})


score_pairs([0], [0])  # load the registry and warm the session before the first request


@app.post("/rank")
async def rank(request: Request) -> Response:
    try:
        body = RankRequest.model_validate_json(await request.body())
    except ValidationError as e:
        return Response(orjson.dumps({"detail": e.errors(include_url=False)}), 422,
                        media_type="application/json")
    doc_ids = [c.doc_id for c in body.candidates]
    scores = score_pairs([body.query_id] * len(doc_ids), doc_ids)
    return Response(ranking(body.query_id, doc_ids, scores, body.top_k),
                    media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(b"ok")
