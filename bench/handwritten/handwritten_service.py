"""The hand-written baseline: a minimal BentoML service for the churn model, written the way
one would write it by hand from the Feast and BentoML docs, with batching tuned by hand.

It does the same job as the generated service (entity keys in, positive-class probability
out, the online features from the same Feast SQLite store, the same model from the same
BentoML model store) and nothing else: no key de-duplication or re-join on keys, no dtype
restoration, no finiteness check, no /features or /info endpoints.

    bentoml serve handwritten_service:HandWrittenChurn   (from this folder)

Environment: MLSTACK_STATE_DIR (Feast registry + online store), MLSTACK_MODEL_TAG, and
BENCH_MAX_BATCH_SIZE / BENCH_MAX_LATENCY_MS (the hand-tuned values below by default; see
bench/results.md for the sweep they came from).
"""

import os

import bentoml
import pandas as pd
from feast import FeatureStore, RepoConfig
from pydantic import BaseModel

STATE_DIR = os.environ["MLSTACK_STATE_DIR"]
MODEL_TAG = os.environ["MLSTACK_MODEL_TAG"]
MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "64"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_MAX_LATENCY_MS", "500"))
FIELDS = ["tenure_months", "monthly_charges", "support_calls", "is_monthly_contract"]
FEATURES = [f"customer_profile:{name}" for name in FIELDS]


class Row(BaseModel):
    customer_id: int


@bentoml.service(workers=1, traffic={"timeout": 10})
class HandWrittenChurn:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)
        self.store = FeatureStore(config=RepoConfig(
            project="churn", provider="local", entity_key_serialization_version=3,
            registry={"registry_type": "file", "path": f"{STATE_DIR}/feast_registry.db"},
            online_store={"type": "sqlite", "path": f"{STATE_DIR}/feast_online_store.db"},
            offline_store={"type": "duckdb"}))
        self.predict([Row(customer_id=0)])  # load the registry before the first request

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, rows: list[Row]) -> list[float | None]:
        fetched = self.store.get_online_features(
            features=FEATURES, entity_rows=[{"customer_id": r.customer_id} for r in rows]
        ).to_dict()  # Feast answers online rows in request order
        frame = pd.DataFrame({f"customer_profile__{name}": fetched[name] for name in FIELDS})
        frame["charges_per_tenure"] = frame["customer_profile__monthly_charges"] / (
            frame["customer_profile__tenure_months"] + 1)
        found = frame.notna().all(axis=1).to_numpy()
        out: list[float | None] = [None] * len(rows)
        if found.any():
            scores = self.model.predict_proba(frame[found].astype(float))[:, 1]
            for position, score in zip(found.nonzero()[0], scores, strict=True):
                out[position] = float(score)
        return out
