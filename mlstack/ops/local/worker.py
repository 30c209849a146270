"""The deploy's child process: runs the generated code with the runtime libraries.

    python -m mlstack.ops.local.worker train --package churn_system [--profile 1]
    python -m mlstack.ops.local.worker skew --package churn_system --url http://127.0.0.1:PORT
    python -m mlstack.ops.local.worker freshness --package churn_system
    python -m mlstack.ops.local.worker profile --package churn_system --tag churn:v1

The parent (mlstack deploy) never imports feast, prefect, bentoml or the generated code; it
starts this with the build folder on PYTHONPATH and the isolated environment, and reads one
JSON result from the file given by --result. Errors are written there too, with their type.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

from mlstack.diagnostics.errors import MissingExtraError, extra_for_module

SKEW_TOLERANCE = 1e-9


def train(package: str) -> dict:
    """The training flow without its promote task: deploy promotes a version after its
    verification and rollout, so a failed deploy never leaves a new model as the current one.
    Without Prefect flows (orchestrator: airflow), the same steps from `<package>/steps.py`."""
    from mlstack.ops.local import steps_training

    if steps_training.has_steps(package):
        return steps_training.train(package)
    flows = importlib.import_module("pipelines.flows")
    return flows.training_flow(promote_model=False)


def _source(package: str, name: str):
    """A file source of the generated pipeline settings (a SourceSpec) and its rows."""
    pipeline = importlib.import_module(f"{package}.pipeline")
    settings = importlib.import_module(f"{package}.settings")
    source = next(s for s in pipeline.SOURCES if s.name == name)
    return source, source.read(settings.PROJECT_DIR)


def _sample_keys(package: str, size: int, seed: int) -> list[dict]:
    """Distinct request rows from the label source (it carries every key the model needs,
    and the request fields' values as logged with each request). Rows whose features serve
    now come first: a key is live in a view when the view's source has a row for it inside
    the view's TTL (online reads null an older one), so a short TTL (an hour of a month's
    sample) still gets keys that serve; the rest of `size` is filled from the others."""
    features = importlib.import_module(f"{package}.features")
    _, labels = _source(package, features.LABEL_SOURCE)
    columns = _request_columns(features)
    keys = labels[columns].drop_duplicates()
    live = _live_views(package, features, keys)
    order = keys.assign(__live=live).sample(frac=1, random_state=seed)
    keys = order.sort_values("__live", ascending=False, kind="stable").head(size)
    keys = keys.drop(columns="__live").sort_values(columns)
    return [{k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
            for row in keys.to_dict(orient="records")]


def _live_views(package: str, features, rows):
    """For each row (of request keys), how many of the model's feature views have a source
    row for its key inside the view's TTL as of now (a view without a TTL: any row up to now)."""
    import numpy as np
    import pandas as pd

    now = pd.Timestamp.now(tz="UTC")
    counts = np.zeros(len(rows), dtype=int)
    ttls = getattr(features, "VIEW_TTL_SECONDS", {})
    for view, source_name in sorted(getattr(features, "VIEW_SOURCES", {}).items()):
        names = list(features.VIEW_KEYS[view])
        if not set(names) <= set(rows.columns):
            continue
        source, frame = _source(package, source_name)
        stamps = frame[source.timestamp_field]
        inside = stamps <= now
        if ttls.get(view):
            inside &= stamps >= now - pd.Timedelta(seconds=ttls[view])
        alive = frame.loc[inside, names].drop_duplicates().assign(__alive=1)
        joined = rows[names].merge(alive, how="left", on=names)
        counts += joined["__alive"].fillna(0).astype(int).to_numpy()
    return counts


def _request_columns(features) -> list[str]:
    """What a request row carries: the entity keys, then the request fields."""
    return [*features.REQUEST_KEYS, *getattr(features, "REQUEST_FIELDS", {})]


def _sample_groups(package: str, size: int, seed: int) -> list[dict]:
    """Ranking: the request rows of whole groups (model.group_by) from the label source, each
    with its group key, groups drawn at random until they hold `size` rows (at least one
    group); groups whose rows serve now (their keys inside the views' TTLs, as
    `_sample_keys`) first; each group's rows in source order, groups in key order."""
    features = importlib.import_module(f"{package}.features")
    _, labels = _source(package, features.LABEL_SOURCE)
    group = features.GROUP_BY
    columns = list(dict.fromkeys([group, *_request_columns(features)]))
    rows = labels[columns].drop_duplicates(list(dict.fromkeys([group,
                                                               *features.REQUEST_KEYS])))
    sizes = rows.groupby(group).size()
    live = rows.assign(__live=_live_views(package, features, rows)).groupby(group)["__live"]
    drawn = live.mean().sample(frac=1, random_state=seed)
    chosen, count = [], 0
    for value in drawn.sort_values(ascending=False, kind="stable").index:
        chosen.append(value)
        count += int(sizes[value])
        if count >= size:
            break
    picked = rows[rows[group].isin(chosen)].sort_values(group, kind="stable")
    return [{k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
            for row in picked.to_dict(orient="records")]


def sample(package: str, size: int) -> dict:
    return {"rows": _sample_keys(package, size, seed=0)}


def _offline_frame(package: str, keys: list[dict]):
    """Point-in-time features of each row as of now, the time of the requests (the latest
    source row within each view's TTL, else null): what the offline store says the online
    store should answer (it nulls a value older than its view's TTL too)."""
    import pandas as pd

    features = importlib.import_module(f"{package}.features")
    store = importlib.import_module(f"{package}.store")
    key_frame = pd.DataFrame(keys)
    out = key_frame.copy()
    entity = key_frame.assign(__as_of=pd.Timestamp.now(tz="UTC"))
    got = store.historical_features(entity, timestamp_column="__as_of")
    for column in features.FETCH_COLUMNS:
        out[column] = got[column].to_numpy()
    return out


def skew(package: str, url: str, size: int) -> dict:
    """Online (through the running service) vs offline point-in-time, features and predictions."""
    import bentoml
    import httpx
    import numpy as np
    import pandas as pd

    features = importlib.import_module(f"{package}.features")
    transforms = importlib.import_module(f"{package}.transforms")
    ranks = features.TASK == "ranking"
    sampled = _sample_groups(package, size, seed=1) if ranks else _sample_keys(package, size,
                                                                               seed=1)
    # what a /predict row carries: the group key only when it is a request key too
    keys = sampled if features.GROUP_BY in (*features.REQUEST_KEYS, None) else [
        {k: v for k, v in row.items() if k != features.GROUP_BY} for row in sampled]
    served = httpx.post(f"{url}/features", json={"rows": keys}, timeout=60).raise_for_status()
    online = pd.DataFrame(served.json())
    rankings: list[tuple[list[int], dict, dict]] = []
    names = [k for k in features.REQUEST_KEYS if k != features.GROUP_BY]  # a candidate's keys
    with httpx.Client(timeout=60) as client:
        if ranks:  # one /rank call per group, as a ranking client sends them
            predicted: list = [None] * len(keys)
            for positions, body in rank_requests(sampled, features.GROUP_BY):
                answer = client.post(f"{url}/rank", json=body).raise_for_status().json()
                rankings.append((positions, body, answer))
                scores = {_candidate_key(c, names): c["score"] for c in answer["ranked"]}
                for position, candidate in zip(positions, body["candidates"], strict=True):
                    predicted[position] = scores.get(_candidate_key(candidate, names))
        else:  # one row per call, as clients send them: a call with more rows than the
            # batch size (or the latency budget) allows gets a 503
            predicted = [client.post(f"{url}/predict", json={"rows": [key]})
                         .raise_for_status().json()[0] for key in keys]
    offline_raw = _offline_frame(package, keys)
    found = offline_raw[list(features.FETCH_COLUMNS)].notna().all(axis=1).to_numpy()
    offline = transforms.model_frame(offline_raw[found].reset_index(drop=True))
    info = httpx.post(f"{url}/info", json={}, timeout=30).raise_for_status().json()
    runtime = info.get("runtime") or {}
    # served by ONNX Runtime: equal to the native model within the registration's tolerance
    tolerance = (runtime.get("parity", {}).get("tolerance", SKEW_TOLERANCE)
                 if runtime.get("runtime") == "onnx" else SKEW_TOLERANCE)
    model = bentoml.sklearn.load_model(info["model_tag"])
    if features.TASK == "binary_classification":
        expected = model.predict_proba(offline)[:, 1]
    else:
        expected = model.predict(offline)
    mismatches = []
    if not found.any():
        mismatches.append(f"none of {len(keys)} sampled entities has feature values inside "
                          "its views' TTL: the service would answer null (is the data older "
                          "than the TTLs?)")
    online_found = online[list(features.MODEL_COLUMNS)].notna().all(axis=1).to_numpy()
    if not np.array_equal(found, online_found):
        rows = [keys[i] for i in np.flatnonzero(found != online_found)[:5]]
        mismatches.append(f"rows found online and offline differ, e.g. {rows}")
    online_values = online[online_found].reset_index(drop=True)[list(features.MODEL_COLUMNS)]
    if len(online_values) == len(offline):
        for column in features.MODEL_COLUMNS:
            a = pd.to_numeric(online_values[column]).to_numpy(dtype=float)
            b = pd.to_numeric(offline[column]).to_numpy(dtype=float)
            bad = ~np.isclose(a, b, rtol=SKEW_TOLERANCE, atol=SKEW_TOLERANCE, equal_nan=True)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                mismatches.append(f"feature {column}: online {a[i]!r} != offline {b[i]!r}")
    served_predictions = np.array([p for p in predicted if p is not None], dtype=float)
    if rankings and len(expected) == int(found.sum()):
        offline_scores = np.full(len(keys), np.nan)
        offline_scores[found] = expected
        mismatches.extend(ranking_mismatches(rankings, offline_scores, tolerance, names))
    if len(served_predictions) == len(expected):
        bad = ~np.isclose(served_predictions, expected, rtol=tolerance, atol=tolerance)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            mismatches.append(f"prediction: served {served_predictions[i]!r} != offline "
                              f"{expected[i]!r}")
    else:
        mismatches.append(f"{len(served_predictions)} served predictions for {len(expected)} "
                          "offline rows")
    return {"sampled": len(keys), "compared": int(found.sum()), "rows": keys,
            "served_rows": [key for key, ok in zip(keys, found, strict=True) if ok],
            "groups": len(rankings),
            "runtime": runtime.get("runtime"), "prediction_tolerance": tolerance,
            "max_abs_prediction_diff": float(np.max(np.abs(served_predictions - expected)))
            if len(served_predictions) == len(expected) and len(expected) else None,
            "mismatches": mismatches}


def _candidate_key(candidate: dict, names: list[str]) -> tuple:
    return tuple(candidate.get(k) for k in names)


def rank_requests(rows: list[dict], group_by: str) -> list[tuple[list[int], dict]]:
    """/rank bodies of request rows that carry the group key: one per group (first seen
    first), its candidates in row order; with each candidate's position in `rows`."""
    groups: dict = {}
    for position, row in enumerate(rows):
        groups.setdefault(row[group_by], []).append(position)
    return [(positions, {group_by: group,
                         "candidates": [{k: v for k, v in rows[p].items() if k != group_by}
                                        for p in positions]})
            for group, positions in groups.items()]


def ranking_mismatches(rankings: list[tuple[list[int], dict, dict]], offline,
                       tolerance: float, names: list[str]) -> list[str]:
    """Per group ((row positions, /rank body, its answer)), the served order against the
    offline scores by row position (NaN: no offline features): the scored candidates first,
    each one's offline score no lower than the next one's beyond the served scores' tolerance
    (twice `tolerance`: so the order is the offline order up to ties within it), then the
    unscored ones, exactly those without offline features."""
    import numpy as np

    out = []
    for positions, body, answer in rankings:
        group = body[next(iter(body))]
        by_key = {_candidate_key(c, names): p for c, p in zip(body["candidates"], positions,
                                                                strict=True)}
        order = [by_key.get(_candidate_key(c, names), -1) for c in answer["ranked"]]
        if sorted(order) != sorted(positions):
            out.append(f"group {group}: /rank answered {len(order)} candidates for "
                       f"{len(positions)}")
            continue
        scores = offline[order]
        served_null = np.array([c["score"] is None for c in answer["ranked"]], dtype=bool)
        if not np.array_equal(served_null, np.isnan(scores)):
            out.append(f"group {group}: candidates without a score differ from those without "
                       "offline features")
            continue
        if served_null.any() and not served_null[np.argmax(served_null):].all():
            out.append(f"group {group}: a candidate without a score is ranked before a "
                       "scored one")
        scored = scores[~served_null]
        worse = np.flatnonzero(scored[1:] > scored[:-1] + 2 * tolerance * np.maximum(
            1, np.abs(scored[:-1])))
        if len(worse):
            i = int(worse[0])
            out.append(f"group {group}: served order puts offline score {float(scored[i])!r} "
                       f"before {float(scored[i + 1])!r}")
    return out


FRESHNESS_KEYS = 5000  # entities whose online rows are read to find each view's newest


def freshness(package: str) -> dict:
    """The age of each feature view's newest online row (the feature freshness SLO is about
    what serving reads): the online store is read for the entities of the label source (every
    key the model is asked about, those inside their views' TTL first), with Feast's event
    timestamps."""
    from datetime import UTC, datetime

    from mlstack.ops.local.profile import online_newest

    keys = _sample_keys(package, FRESHNESS_KEYS, seed=2)
    now = datetime.now(UTC)
    views = {}
    for view, newest in online_newest(package, keys).items():
        views[view] = {"newest": newest.isoformat() if newest else None,
                       "age_seconds": (now - newest).total_seconds() if newest else None,
                       "entities_read": len(keys)}
    return {"now": now.isoformat(), "views": views}


def _explained(exc: BaseException) -> str:
    """The error as the parent shows it: a missing optional library names its extra."""
    if isinstance(exc, ModuleNotFoundError):
        extra = extra_for_module(exc.name)
        if extra is not None:
            missing = MissingExtraError(extra, exc.name or "", "the generated code")
            return f"{missing.message}; {missing.hint}"
    return str(exc)


def _profile(package: str, tag: str) -> dict:
    from mlstack.ops.local.profile import PROFILE_KEYS, measure

    keys = _sample_keys(package, PROFILE_KEYS, seed=3)
    measured = measure(package, tag, keys=keys)
    candidates = _candidates_per_request(package)
    if candidates is not None:
        measured["candidates_per_request"] = candidates
    return measured


def _candidates_per_request(package: str) -> dict | None:
    """A ranking model served by /rank (its group key is a request key): how many candidates
    a request carries, as the label source's groups hold them (median, p90, largest, the
    groups counted); None for any other model (one row per /predict request)."""
    from mlstack.ops.local.profile import candidate_counts

    features = importlib.import_module(f"{package}.features")
    group = getattr(features, "GROUP_BY", None)
    if getattr(features, "TASK", None) != "ranking" or group not in features.REQUEST_KEYS:
        return None
    _, labels = _source(package, features.LABEL_SOURCE)
    rows = labels.drop_duplicates(list(dict.fromkeys([group, *features.REQUEST_KEYS])))
    return candidate_counts(rows.groupby(group).size().tolist())


def _profile_after_training(package: str, tag: str) -> dict:
    """The profile job's result, measured in the process that trained (its libraries are
    imported already); a failure is reported, not raised: the deploy then runs the profile job
    on its own, which names it in the profile stage."""
    import time

    began = time.perf_counter()
    try:
        measured = _profile(package, tag)
    except Exception as exc:  # noqa: BLE001  (the profile stage reports it)
        traceback.print_exc(file=sys.stderr)
        return {"ok": False, "error": f"{type(exc).__name__}: {_explained(exc)}"}
    return {"ok": True, "result": measured, "seconds": round(time.perf_counter() - began, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=("train", "skew", "sample", "freshness", "profile"))
    parser.add_argument("--package", required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--url")
    parser.add_argument("--tag", help="profile: the model tag the version serves")
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--freshness", type=int, default=0,
                        help="skew: also measure feature freshness (saves a worker start)")
    parser.add_argument("--profile", type=int, default=0,
                        help="train: also profile the model it registered (saves a worker "
                             "start)")
    args = parser.parse_args(argv)
    try:
        if args.job == "train":
            trained = train(args.package)
            if args.profile:
                trained["profile"] = _profile_after_training(args.package,
                                                             trained["model_tag"])
            result = {"ok": True, "result": trained}
        elif args.job == "sample":
            result = {"ok": True, "result": sample(args.package, args.size)}
        elif args.job == "freshness":
            result = {"ok": True, "result": freshness(args.package)}
        elif args.job == "profile":
            result = {"ok": True, "result": _profile(args.package, args.tag)}
        else:
            measured = skew(args.package, args.url, args.size)
            if args.freshness:
                measured["freshness"] = freshness(args.package)
            result = {"ok": True, "result": measured}
    except BaseException as exc:  # reported to the parent, which names the stage
        traceback.print_exc(file=sys.stderr)
        result = {"ok": False, "error_type": type(exc).__name__, "error": _explained(exc)}
    args.result.write_text(json.dumps(result, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
