"""In-process timings of the serving path (run by the bench in a child process with the
deployed tree on PYTHONPATH and the deploy's environment; prints one JSON object).

    python -m bench.workers.inprocess --package churn_system --keys keys.json --calls 1000

- features: raw Feast `get_online_features` (a fresh list of refs each call, as a user would
  write it) vs the generated `store.online_features` (a DataFrame) vs the service's whole
  input path (`inputs`, a mlstack.runtime.serving.ModelInput: fetch into numpy arrays, TTL,
  transforms, the model's matrix), one entity per call and 32 per call;
- predict: `model.predict_proba` (sklearn) and the ONNX export on prepared rows (the
  ceilings) vs the generated service's `predict_rows` (what its /predict runs: input path +
  model), on ONNX Runtime as deployed and on the native model, and the hand-written one's
  `predict`, called in process (no HTTP, no batcher).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

HANDWRITTEN = Path(__file__).resolve().parent.parent / "handwritten" / "handwritten_service.py"
EXPERT = Path(__file__).resolve().parent.parent / "expert" / "expert_service.py"


def _timings(call, batches, calls: int) -> list[float]:
    out = []
    for i in range(calls):
        batch = batches[i % len(batches)]
        began = time.perf_counter()
        call(batch)
        out.append((time.perf_counter() - began) * 1000)
    return out


def _summary(values: list[float]) -> dict:
    values = sorted(values)

    def pct(q):
        rank = q / 100 * (len(values) - 1)
        low = int(rank)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (rank - low)

    return {"calls": len(values), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": sum(values) / len(values)}


def one_frame_online_features(store, features):
    """What-if: the generated `store.online_features` with its frame built by one
    DataFrame constructor instead of request rows plus one `assign` per feature column."""
    import pandas as pd

    def fetch(rows: list[dict]):
        keys = features.REQUEST_KEYS
        requested = [tuple(row[k] for k in keys) for row in rows]
        unique = list(dict.fromkeys(requested))
        fetched = store.get_store().get_online_features(
            features=store.feature_service(),
            entity_rows=[dict(zip(keys, key, strict=True)) for key in unique],
            full_feature_names=True).to_dict()
        row_of = {key: i for i, key in enumerate(zip(*(fetched[k] for k in keys),
                                                     strict=True))}
        data = {k: [row[k] for row in rows] for k in (rows[0] if rows else keys)}
        for column in features.FETCH_COLUMNS:
            data[column] = [fetched[column][row_of[key]] for key in requested]
        return pd.DataFrame(data)

    return fetch


def _unwrap(method):
    """The plain function behind a BentoML API method (no batcher, no HTTP)."""
    return getattr(method, "func", method)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", required=True)
    parser.add_argument("--keys", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import bentoml
    import numpy as np

    keys = json.loads(args.keys.read_text())
    singles = [[k] for k in keys]
    batches32 = [keys[i:i + 32] for i in range(0, len(keys) - 31, 32)] or [keys]
    features = importlib.import_module(f"{args.package}.features")
    store = importlib.import_module(f"{args.package}.store")
    service_module = importlib.import_module("service.service")
    service_class = next(v for v in vars(service_module).values()
                         if isinstance(v, bentoml.Service))
    Row = service_module.Row
    generated = service_class()
    spec = importlib.util.spec_from_file_location("bench_handwritten_service", HANDWRITTEN)
    handwritten_module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = handwritten_module
    spec.loader.exec_module(handwritten_module)
    handwritten = handwritten_module.HandWrittenChurn()
    spec = importlib.util.spec_from_file_location("bench_expert_service", EXPERT)
    expert = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = expert
    spec.loader.exec_module(expert)
    expert_singles = [[k["customer_id"] for k in b] for b in singles]
    expert_batches = [[k["customer_id"] for k in b] for b in batches32]
    feast_store = store.get_store()
    refs = list(features.FETCH_REFS)

    one_frame = one_frame_online_features(store, features)
    import pandas as pd

    unknown = [{k: -1 for k in features.REQUEST_KEYS}]
    one_frame_same = True
    for batch in [singles[0], batches32[0], batches32[0] + unknown + batches32[0][:3]]:
        try:
            pd.testing.assert_frame_equal(one_frame(batch), store.online_features(batch))
        except AssertionError:
            one_frame_same = False

    def raw_feast(rows):
        return feast_store.get_online_features(features=refs, entity_rows=rows,
                                               full_feature_names=True).to_dict()

    from mlstack.runtime import scoring

    model = bentoml.sklearn.load_model(generated.model_tag)
    matrices = {size: generated.inputs([Row(**k) for k in batch]).matrix
                for size, batch in ((1, singles[0]), (32, batches32[0]))}
    columns = list(features.MODEL_COLUMNS)
    frames = {size: pd.DataFrame(m, columns=columns) for size, m in matrices.items()}
    native = service_class()
    native.model = scoring.load_served_model(
        bentoml.models.get(generated.model_tag), task=features.TASK, runtime="native")
    onnx_score = generated.model.score if generated.model.runtime == "onnx" else None
    hand_predict = _unwrap(type(handwritten).predict)
    row_singles = [[Row(**k) for k in b] for b in singles]
    row_batches = [[Row(**k) for k in b] for b in batches32]
    hand_rows = handwritten_module.Row
    hand_singles = [[hand_rows(**k) for k in b] for b in singles]
    hand_batches = [[hand_rows(**k) for k in b] for b in batches32]

    access = store.STORE
    read_path = access.online_read_path()
    tuples = {n: [[tuple(k[c] for c in features.REQUEST_KEYS) for k in b] for b in batches]
              for n, batches in ((1, singles), (32, batches32))}
    cases = {
        "feast_raw_1": (raw_feast, singles),
        "store_online_features_1": (store.online_features, singles),
        "service_model_input_1": (generated.inputs, row_singles),
        "what_if_one_frame_online_features_1": (one_frame, singles),
        "feast_raw_32": (raw_feast, batches32),
        "store_online_features_32": (store.online_features, batches32),
        "service_model_input_32": (generated.inputs, row_batches),
        "what_if_one_frame_online_features_32": (one_frame, batches32),
        "online_read_feast_1": (lambda k: access._feast_read(k, with_times=True), tuples[1]),
        "online_read_feast_32": (lambda k: access._feast_read(k, with_times=True),
                                 tuples[32]),
        "model_predict_proba_1": (lambda f: model.predict_proba(f), [frames[1]]),
        "model_predict_proba_32": (lambda f: model.predict_proba(f), [frames[32]]),
        "generated_predict_1": (generated.predict_rows, row_singles),
        "generated_predict_native_1": (native.predict_rows, row_singles),
        "handwritten_predict_1": (lambda rows: hand_predict(handwritten, rows), hand_singles),
        "expert_predict_1": (expert.predict_ids, expert_singles),
        "generated_predict_32": (generated.predict_rows, row_batches),
        "generated_predict_native_32": (native.predict_rows, row_batches),
        "handwritten_predict_32": (lambda rows: hand_predict(handwritten, rows), hand_batches),
        "expert_predict_32": (expert.predict_ids, expert_batches),
    }
    if access._direct_read is not None:
        cases["online_read_direct_1"] = (access._direct_read, tuples[1])
        cases["online_read_direct_32"] = (access._direct_read, tuples[32])
    if onnx_score is not None:
        cases["onnx_score_1"] = (onnx_score, [matrices[1]])
        cases["onnx_score_32"] = (onnx_score, [matrices[32]])
    # the services must give the same numbers on the same keys (ONNX: within its tolerance)
    a = generated.predict_rows(row_batches[0])
    b = hand_predict(handwritten, hand_batches[0])
    c = native.predict_rows(row_batches[0])
    same = all((x is None and y is None) or (x is not None and y is not None
                                             and abs(x - y) <= scoring.PARITY_TOLERANCE)
               for x, y in zip(a, b, strict=True))
    same = same and all((x is None and y is None) or (  # native: the hand-written's numbers
        x is not None and y is not None and abs(x - y) < 1e-9) for x, y in zip(c, b, strict=True))
    e = expert.predict_ids(expert_batches[0])  # the expert's ONNX export: within tolerance
    same = same and all((x is None and y is None) or (
        x is not None and y is not None and abs(x - y) <= scoring.PARITY_TOLERANCE)
        for x, y in zip(a, e, strict=True))
    results: dict[str, list[dict]] = {name: [] for name in cases}
    for call, inputs in cases.values():  # warm every path once
        _timings(call, inputs, 20)
    for _ in range(args.rounds):  # rounds interleave the cases: background load hits all
        for name, (call, inputs) in cases.items():
            calls = args.calls if name.endswith("_1") else max(50, args.calls // 8)
            results[name].append(_summary(_timings(call, inputs, calls)))
    print(json.dumps({"rounds": results, "services_agree": same,
                      "what_if_one_frame_same_result": one_frame_same,
                      "model_tag": generated.model_tag, "runtime": generated.model.info(),
                      "online_read": read_path,
                      "numpy": np.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
