"""The expert baseline (issue 20): the churn service as a skilled engineer writes it by hand.

FastAPI on uvicorn (uvloop, httptools, no access log), 2 workers like the generated service,
a strict pydantic request, an orjson response; Feast `get_online_features` with the feature
service read once, a value older than the view's 45-day TTL is null, as is an unknown key;
the same fitted model (BentoML model store) exported with skl2onnx, on ONNX Runtime, 1 thread.

    uvicorn expert_service:app --workers 2 --loop uvloop --http httptools --no-access-log

Environment: MLSTACK_STATE_DIR (Feast registry + online store), MLSTACK_MODEL_TAG, BENTOML_HOME.
"""

import os
import time

import bentoml
import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request, Response
from feast import FeatureStore, RepoConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType

STATE_DIR = os.environ["MLSTACK_STATE_DIR"]
TTL_SECONDS = 45 * 86400
FIELDS = ["tenure_months", "monthly_charges", "support_calls", "is_monthly_contract"]


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    customer_id: int


class Rows(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    rows: list[Row] = Field(max_length=256)


store = FeatureStore(config=RepoConfig(
    project="churn", provider="local", entity_key_serialization_version=3,
    registry={"registry_type": "file", "path": f"{STATE_DIR}/feast_registry.db"},
    online_store={"type": "sqlite", "path": f"{STATE_DIR}/feast_online_store.db"},
    offline_store={"type": "duckdb"}))
features = store.get_feature_service("churn_model")
model = bentoml.sklearn.load_model(os.environ["MLSTACK_MODEL_TAG"])
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(
    to_onnx(model, initial_types=[("X", FloatTensorType([None, 5]))],
            options={id(model): {"zipmap": False}}).SerializeToString(),
    options, providers=["CPUExecutionProvider"])
app = FastAPI()


def predict_ids(ids: list[int]) -> list[float | None]:
    got = store.get_online_features(features=features, entity_rows=[
        {"customer_id": i} for i in ids]).to_dict(include_event_timestamps=True)
    oldest = time.time() - TTL_SECONDS
    ok = [all(got[f][i] is not None and got[f + "__ts"][i] >= oldest for f in FIELDS)
          for i in range(len(ids))]
    out: list[float | None] = [None] * len(ids)
    rows = [i for i, good in enumerate(ok) if good]
    if rows:
        tenure, charges, calls, monthly = (np.array([got[f][i] for i in rows], np.float64)
                                           for f in FIELDS)
        X = np.column_stack([tenure, charges, calls, monthly, charges / (tenure + 1)])
        X = X.astype(np.float32)
        for i, p in zip(rows, session.run(None, {"X": X})[1][:, 1].tolist(), strict=True):
            out[i] = p
    return out


predict_ids([0])  # load the registry and warm the session before the first request


@app.post("/predict")
async def predict(request: Request) -> Response:
    try:
        body = Rows.model_validate_json(await request.body())
    except ValidationError as e:
        return Response(orjson.dumps({"detail": e.errors(include_url=False)}), 422,
                        media_type="application/json")
    scores = predict_ids([r.customer_id for r in body.rows])
    return Response(orjson.dumps(scores), media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(b"ok")
