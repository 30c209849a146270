"""Section 4: the online feature fetch as the generated service does it (Feast, SQLite online
store, in process) vs raw Feast `get_online_features`, per request of 1 and of 32 entities.

The in-process worker also times `model.predict_proba` and both services' predict functions
without HTTP; section 3 uses those as its ceiling.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from bench.common import PYTHON, REPO, median, rnd, timed_run

WORKER = REPO / "bench" / "workers" / "inprocess.py"
GOAL_MS = 3.0


def entity_keys(deployment, count: int = 512, seed: int = 0) -> list[dict]:
    """Customer ids the online store holds (every id of the label source), shuffled."""
    import pandas as pd

    labels = pd.read_parquet(deployment.project / "data" / "churn_labels.parquet")
    ids = sorted(int(i) for i in labels["customer_id"].unique())
    random.Random(seed).shuffle(ids)
    return [{"customer_id": i} for i in ids[:count]]


def measure(deployment, workdir: Path, calls: int = 1000, rounds: int = 3) -> dict:
    keys_file = workdir / "keys.json"
    keys_file.write_text(json.dumps(entity_keys(deployment)))
    env = deployment.runtime_env(MLSTACK_MODEL_TAG=deployment.model_tag)
    _w, _c, out = timed_run([PYTHON, str(WORKER), "--package", "churn_system", "--keys",
                             str(keys_file), "--calls", str(calls), "--rounds", str(rounds)],
                            env=env, cwd=deployment.build_dir, timeout=900)
    data = json.loads(out.strip().splitlines()[-1])
    figures = {name: {k: rnd(median([r[k] for r in runs]), 4)
                      for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")}
               for name, runs in data["rounds"].items()}
    return {"calls": calls, "rounds": rounds, "figures": figures,
            "services_agree": data["services_agree"],
            "what_if_one_frame_same_result": data["what_if_one_frame_same_result"],
            "online_read": data.get("online_read")}


def section(inprocess: dict) -> dict:
    f = inprocess["figures"]
    rows = {}
    for size in (1, 32):
        raw, store, path = (f[f"feast_raw_{size}"], f[f"store_online_features_{size}"],
                            f[f"service_model_input_{size}"])
        rows[size] = {
            "raw_feast": raw,
            "generated_online_features": store,
            "service_fetch_and_transforms": path,
            "added_p50_ms": rnd(store["p50_ms"] - raw["p50_ms"], 3),
            "added_p99_ms": rnd(store["p99_ms"] - raw["p99_ms"], 3),
            "ratio_p50": rnd(store["p50_ms"] / raw["p50_ms"], 2),
            "ratio_p99": rnd(store["p99_ms"] / raw["p99_ms"], 2),
            "service_path_added_p99_ms": rnd(path["p99_ms"] - raw["p99_ms"], 3),
            "what_if_one_frame": f[f"what_if_one_frame_online_features_{size}"],
        }
    one = rows[1]
    return {
        "calls_per_round": inprocess["calls"],
        "rounds": inprocess["rounds"],
        "per_request": {f"{size}_entities": row for size, row in rows.items()},
        "goal": f"the fetch adds < {GOAL_MS:g} ms p99 (one entity per request)",
        "goal_met": one["generated_online_features"]["p99_ms"] < GOAL_MS,
        "goal_met_service_path": one["service_fetch_and_transforms"]["p99_ms"] < GOAL_MS,
        "what_if_one_frame_same_result": inprocess["what_if_one_frame_same_result"],
    }
