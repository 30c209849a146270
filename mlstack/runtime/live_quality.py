"""Live quality: what a version served, judged on the outcomes that arrive later.

    log = read_log(folder)                                  # or feedback.joined(folder)
    frame = label_outcomes(log, labels, ["user_id"], "churned", "event_at", 7 * 86400)
    report = live_quality(frame, "binary_classification", window=86400, now=now)
    judge_quality(report, {"auc": ">= 0.7"})   -> [{"version", "metric", "status", ...}]

`label_outcomes` takes outcomes from a label source as it grows (a table of entity keys, a
label and the label's time), point in time correct: a logged row gets the earliest label of
its entity at or after the prediction and within the horizon, never one from before it (the
model could have seen that one: it would flatter the model). `feedback.joined` is the other
way in (outcomes clients sent back by request id, on each request's row 0).

`live_quality` reads the rows with a known outcome, per version, and reports each metric with
a 95% interval and the sample count it rests on. Intervals:

    auc       DeLong, DeLong & Clarke-Pearson (1988) variance by the midrank algorithm of
              Sun & Xu (2014); auc +- z sqrt(var), clipped to [0, 1]
    logloss   mean +- z sd / sqrt(n) over the rows' losses (normal approximation)
    accuracy  Wilson score interval (binary: the prediction is output >= 0.5; multiclass:
              the output names the outcome's class, 2.0 and '2' alike)
    rmse      normal approximation of the MSE (mean +- z sd(e^2) / sqrt(n)) mapped through
              the square root, the lower end clipped at 0 (never a negative RMSE)
    mae       mean +- z sd(|e|) / sqrt(n), clipped at 0
    ndcg@k    per query as evaluation.ndcg computes it (scikit-learn, queries of more than one
              judged row); the mean over queries +- t(0.975, q - 1) sd / sqrt(q)

z is the normal 97.5% quantile. A version with fewer than `min_samples` samples (rows; for
ranking, queries: the unit its interval is over) reports `enough: false` and null metrics:
a readout does not claim a number it has not earned. The report is JSON-ready (no NaN: null),
deterministic, its floats rounded to 6 significant digits.

`judge_quality` judges gates as the spec writes them ({"auc": ">= 0.7"}, or evaluation.Gate
objects) on each version's live numbers, with this rule:

    not_enough  the version is below min_samples (or the metric is undefined: one class only)
    met         the point estimate passes the gate
    missed      the point estimate fails and so does every point of the interval (for >= and
                >: its upper end fails; for <= and <: its lower end; for ==: the threshold is
                outside it) - the data show the version is on the wrong side
    uncertain   the point estimate fails but the interval reaches the passing side: more
                samples may yet show it passes; an alarm should wait
    unmeasured  the live readout does not compute the gate's metric (f1, say)

A gate therefore alarms ('missed') only on evidence, and a point estimate that passes is taken
as met, so the live readout never contradicts a version that is doing as well as its gates ask.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mlstack.runtime.evaluation import GATE_OPS, Gate, ndcg
from mlstack.runtime.rounding import rounded

__all__ = ["CONFIDENCE", "INTERVALS", "STATUSES", "TASKS", "auc_interval", "delong_auc",
           "judge_quality", "label_outcomes", "live_quality", "monitoring_report",
           "wilson_interval"]

CONFIDENCE = 0.95
Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
TASKS = ("binary_classification", "regression", "ranking", "multiclass")
STATUSES = ("met", "missed", "uncertain", "not_enough", "unmeasured")
# How each metric's interval is computed (carried in the report, so a readout says it).
INTERVALS = {
    "auc": "DeLong (1988) variance, Sun & Xu (2014) midranks; auc +- z sd, clipped to [0, 1]",
    "logloss": "normal approximation: mean +- z sd / sqrt(n)",
    "accuracy": "Wilson score interval",
    "rmse": "normal approximation of the MSE, mapped through the square root",
    "mae": "normal approximation: mean +- z sd / sqrt(n), clipped at 0",
    "ndcg": "mean over queries +- t(0.975, q - 1) sd / sqrt(q)",
}
# The spec's gate grammar (frontend.spec.types.GATE_RE; the runtime imports nothing else of
# mlstack, so it reads the text itself): an optional operator (default >=) and a number.
GATE_RE = re.compile(r"^\s*(>=|<=|>|<|==)?\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")
# Logged probabilities are clipped to [EPS, 1 - EPS] for the log loss (as scikit-learn does).
EPS = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------- outcomes from a label source

def _key_text(value: Any) -> str | None:
    """An entity key value as text that compares equal across dtypes: 42, 42.0, np.int64(42)
    and '42' are all '42'; True is 'True'; a missing value is None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _keys_text(values: pd.Series) -> np.ndarray:
    """`_key_text` of each value (object array); numpy integers without gaps at numpy speed."""
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        texts: np.ndarray = values.to_numpy().astype(str).astype(object)
        return texts
    return np.array([_key_text(v) for v in values.to_numpy(dtype=object)], dtype=object)


def _utc(values: pd.Series) -> pd.Series:
    """Times as datetime64[ns, UTC]: numbers are unix seconds, naive times are UTC."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        times = pd.to_datetime(values, unit="s", utc=True)
    else:
        times = pd.to_datetime(values, utc=True)
    return times.astype("datetime64[ns, UTC]")


def label_outcomes(log: pd.DataFrame, labels: pd.DataFrame, keys: str | Sequence[str],
                   label_field: str, timestamp_field: str,
                   horizon_seconds: float | None) -> pd.DataFrame:
    """The log's rows (same order and index) with `outcome` and `outcome_at` from `labels`:
    for each row, the label of its entity (the `keys` columns, present in both frames) whose
    time (`timestamp_field`) is at or after the row's `ts` and at most `horizon_seconds` later
    (None: no limit), the earliest such one (of labels at the same time, the first listed).
    Rows with none, or with a missing key or time, get NaN / NaT: not known yet. A label from
    before the prediction is never taken. Key values are compared as text (42, 42.0 and '42'
    match; see _key_text), so a log column written as strings still meets an integer key.
    The outcome is float64 when the label column is numeric or bool, else object. One
    vectorized pandas.merge_asof (direction forward, by the keys); any input order works."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("label_outcomes needs at least one entity key")
    for name in ["ts", *keys]:
        if name not in log:
            raise ValueError(f"the log has no column {name!r}")
    for name in [*keys, label_field, timestamp_field]:
        if name not in labels:
            raise ValueError(f"the labels have no column {name!r}")
    if horizon_seconds is not None and not (math.isfinite(horizon_seconds)
                                            and horizon_seconds >= 0):
        raise ValueError(f"horizon_seconds must be a finite number >= 0, not {horizon_seconds}")
    by = [f"__key{i}" for i in range(len(keys))]
    left = pd.DataFrame({"__pos": np.arange(len(log)), "__ts": _utc(log["ts"]).to_numpy()})
    right = pd.DataFrame({"__at": _utc(labels[timestamp_field]).to_numpy(),
                          "__label": labels[label_field].to_numpy(dtype=object)})
    for name, key in zip(by, keys, strict=True):
        left[name] = _keys_text(log[key])
        right[name] = _keys_text(labels[key])
    left = left.dropna(subset=["__ts", *by]).sort_values("__ts", kind="mergesort")
    right = right.dropna(subset=["__at", "__label", *by]).sort_values("__at", kind="mergesort")
    outcome = np.full(len(log), np.nan, dtype=object)
    outcome_at = pd.Series(pd.NaT, index=range(len(log)), dtype="datetime64[ns, UTC]")
    if len(left) and len(right):
        tolerance = None if horizon_seconds is None else pd.Timedelta(seconds=horizon_seconds)
        matched = pd.merge_asof(left, right, left_on="__ts", right_on="__at", by=by,
                                direction="forward", allow_exact_matches=True,
                                tolerance=tolerance)
        matched = matched[matched["__at"].notna()]
        positions = matched["__pos"].to_numpy()
        outcome[positions] = matched["__label"].to_numpy()
        outcome_at.iloc[positions] = matched["__at"].to_numpy()
    out = log.copy()
    numeric = pd.api.types.is_numeric_dtype(labels[label_field].dtype)
    out["outcome"] = outcome.astype(np.float64) if numeric else outcome
    out["outcome_at"] = outcome_at.array
    return out


# ----------------------------------------------------------------------------- the statistics

def delong_auc(scores: Any, outcomes: Any) -> tuple[float, float]:
    """(AUC, its DeLong variance) of `scores` for the binary `outcomes` (1 positive, 0
    negative). The variance is DeLong, DeLong & Clarke-Pearson (1988): S10 / m + S01 / n, the
    sample variances (ddof 1) of the positives' and the negatives' structural components,
    computed from midranks (Sun & Xu 2014; ties count one half). NaN when a class is missing;
    the variance is NaN with fewer than two of either class."""
    scores = np.asarray(scores, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    positives, negatives = scores[outcomes == 1], scores[outcomes == 0]
    m, n = len(positives), len(negatives)
    if m == 0 or n == 0:
        return math.nan, math.nan

    def midranks(values: np.ndarray) -> np.ndarray:
        ranked: np.ndarray = pd.Series(values).rank(method="average").to_numpy()
        return ranked

    both = midranks(np.concatenate([positives, negatives]))
    auc = (both[:m].sum() - m * (m + 1) / 2) / (m * n)
    if m < 2 or n < 2:
        return float(auc), math.nan
    v10 = (both[:m] - midranks(positives)) / n          # per positive: share of negatives below
    v01 = 1 - (both[m:] - midranks(negatives)) / m      # per negative: share of positives above
    variance = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return float(auc), float(variance)


def auc_interval(scores: Any, outcomes: Any) -> tuple[float, float, float]:
    """(AUC, low, high): the DeLong 95% interval, clipped to [0, 1]; NaN where undefined."""
    auc, variance = delong_auc(scores, outcomes)
    if math.isnan(variance):
        return auc, math.nan, math.nan
    half = Z * math.sqrt(variance)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def wilson_interval(successes: int, n: int) -> tuple[float, float, float]:
    """(share, low, high): the Wilson score 95% interval of `successes` out of `n`."""
    if n <= 0:
        return math.nan, math.nan, math.nan
    share = successes / n
    z2 = Z * Z
    scale = 1 + z2 / n
    center = (share + z2 / (2 * n)) / scale
    half = Z * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / scale
    return share, max(0.0, center - half), min(1.0, center + half)


def _mean_interval(values: np.ndarray, quantile: float = Z) -> tuple[float, float, float]:
    """(mean, mean - q sd / sqrt(n), mean + q sd / sqrt(n)), sd with ddof 1."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = quantile * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _t_quantile(degrees: int) -> float:
    """The 97.5% quantile of Student's t with `degrees` degrees of freedom."""
    from scipy import stats  # type: ignore[import-untyped]

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, degrees))


# ------------------------------------------------------------------------- metrics per version

Interval = tuple[float, float, float]


def _numbers(values: pd.Series, what: str) -> np.ndarray:
    """Outcomes as float64 (True is 1); a value that is not a number raises ValueError."""
    converted = pd.to_numeric(values.astype(object).map(
        lambda v: float(v) if isinstance(v, bool | np.bool_) else v), errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        raise ValueError(f"{what}: outcome {values[bad].iloc[0]!r} is not a number")
    numbers_: np.ndarray = converted.to_numpy(dtype=np.float64)
    return numbers_


def _binary(rows: pd.DataFrame) -> dict[str, Interval]:
    y = _numbers(rows["outcome"], "binary_classification")
    p = rows["output"].to_numpy(dtype=np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("binary_classification: outcomes must be 0 or 1")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("binary_classification: outputs must be probabilities in [0, 1]")
    clipped = np.clip(p, EPS, 1 - EPS)
    losses = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    correct = int(((p >= 0.5) == (y == 1)).sum())
    return {"auc": auc_interval(p, y), "logloss": _mean_interval(losses),
            "accuracy": wilson_interval(correct, len(y))}


def _regression(rows: pd.DataFrame) -> dict[str, Interval]:
    errors = rows["output"].to_numpy(dtype=np.float64) - _numbers(rows["outcome"], "regression")
    mse, mse_low, mse_high = _mean_interval(errors ** 2)
    rmse = (math.sqrt(mse), math.sqrt(max(0.0, mse_low)), math.sqrt(mse_high)) \
        if not math.isnan(mse_low) else (math.sqrt(mse), math.nan, math.nan)
    mae, mae_low, mae_high = _mean_interval(np.abs(errors))
    return {"rmse": rmse, "mae": (mae, max(0.0, mae_low), mae_high)}


def _multiclass(rows: pd.DataFrame) -> dict[str, Interval]:
    predicted = _keys_text(rows["output"])
    actual = _keys_text(rows["outcome"])
    correct = int((predicted == actual).sum())
    return {"accuracy": wilson_interval(correct, len(rows))}


def _ndcg_per_query(rows: pd.DataFrame, group: str, k: int) -> np.ndarray:
    """NDCG@k of each query (`group`) with more than one judged row, as evaluation.ndcg."""
    judged = rows.assign(__relevance=_numbers(rows["outcome"], "ranking"))
    values = [ndcg(query, query["output"].to_numpy(dtype=np.float64), k, group, "__relevance")
              for _, query in judged.groupby(group, sort=True) if len(query) > 1]
    return np.asarray(values, dtype=np.float64)


def _ranking(per_query: np.ndarray) -> dict[str, Interval]:
    queries = len(per_query)
    if queries < 2:
        value = float(per_query.mean()) if queries else math.nan
        return {"ndcg": (value, math.nan, math.nan)}
    mean, low, high = _mean_interval(per_query, _t_quantile(queries - 1))
    return {"ndcg": (mean, max(0.0, low), min(1.0, high))}


def _instant(value: datetime | pd.Timestamp | str | float) -> pd.Timestamp:
    """A time as a UTC pandas Timestamp: unix seconds, ISO text or a datetime (naive: UTC)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return pd.Timestamp(float(value), unit="s", tz="UTC")
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _metric(value: Interval | None) -> dict[str, float | None]:
    if value is None:
        return {"value": None, "low": None, "high": None}
    # NaN (undefined: one class only, one query) becomes null in rounded()
    return {name: float(x) for name, x in zip(("value", "low", "high"), value, strict=True)}


def live_quality(frame: pd.DataFrame, task: str, *, window: float | timedelta | None = None,
                 now: datetime | str | float | None = None, min_samples: int = 30, k: int = 10,
                 group: str | None = None) -> dict[str, Any]:
    """Each version's live quality (see the module docstring) over the rows of `frame` (a
    prediction log with `outcome`, from label_outcomes or feedback.joined) whose outcome and
    output are known and, with `window` (seconds or a timedelta), whose ts is in
    [now - window, now); `now` defaults to the wall clock; with `now` alone, ts < now.
    `group` (ranking) is the column naming the query, `request_id` by default (one /rank
    request is one query); `k` the NDCG cut-off. Returns

        {"task", "confidence", "min_samples", "window": {"start", "end"} | None,
         "intervals": {metric: how}, "k" and "group" (ranking only),
         "versions": {version: {"n", "enough", "metrics": {name: {"value", "low", "high"}},
                                "queries" (ranking only)}}}

    with every version that has rows in the window (sorted), n = rows with a known outcome."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: one of {', '.join(TASKS)}")
    if min_samples < 1 or k < 1:
        raise ValueError("min_samples and k must be at least 1")
    for name in ("ts", "version", "output", "outcome"):
        if name not in frame:
            raise ValueError(f"the frame has no column {name!r}")
    group = group or "request_id"
    if task == "ranking" and group not in frame:
        raise ValueError(f"the frame has no query column {group!r}")
    rows = frame
    span = None
    if window is not None or now is not None:
        end = _instant(now) if now is not None else pd.Timestamp(datetime.now(UTC))
        ts = _utc(rows["ts"])
        inside = (ts < end).to_numpy()
        if window is not None:
            seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
            start = end - pd.Timedelta(seconds=seconds)
            inside &= (ts >= start).to_numpy()
            span = {"start": start.isoformat(), "end": end.isoformat()}
        rows = rows[inside]
    known = rows[rows["outcome"].notna().to_numpy() & rows["output"].notna().to_numpy()]
    names = {"binary_classification": ["auc", "logloss", "accuracy"],
             "regression": ["rmse", "mae"], "multiclass": ["accuracy"],
             "ranking": [f"ndcg@{k}"]}[task]
    versions: dict[str, Any] = {}
    for version in sorted({str(v) for v in rows["version"].dropna()}):
        mine = known[known["version"].astype(str).to_numpy() == version]
        entry: dict[str, Any] = {"n": len(mine)}
        if task == "ranking":
            per_query = _ndcg_per_query(mine, group, k) if len(mine) else np.array([])
            entry["queries"] = len(per_query)
            samples = len(per_query)
        else:
            samples = len(mine)
        entry["enough"] = samples >= min_samples
        values: dict[str, Interval] | None = None
        if entry["enough"]:
            if task == "binary_classification":
                values = _binary(mine)
            elif task == "regression":
                values = _regression(mine)
            elif task == "multiclass":
                values = _multiclass(mine)
            else:
                values = {names[0]: _ranking(per_query)["ndcg"]}
        entry["metrics"] = {name: _metric(values[name] if values else None) for name in names}
        versions[version] = entry
    report: dict[str, Any] = {
        "task": task, "confidence": CONFIDENCE, "min_samples": min_samples, "window": span,
        "intervals": {name: INTERVALS[name.split("@")[0]] for name in names},
        "versions": versions,
    }
    if task == "ranking":
        report.update(k=k, group=group)
    out: dict[str, Any] = rounded(report)
    return out


# ----------------------------------------------------------------------------------- the gates

def _gates(gates: Mapping[str, str | float] | Iterable[Gate]) -> list[Gate]:
    """Gates as evaluation.Gate: the spec's {"auc": ">= 0.7"} (a bare number means >=), or
    Gate objects as they are."""
    if not isinstance(gates, Mapping):
        return list(gates)
    parsed = []
    for metric, text in gates.items():
        if isinstance(text, bool):
            raise ValueError(f"gate {metric}: {text!r} is not a gate")
        if isinstance(text, int | float):
            parsed.append(Gate(metric, ">=", float(text)))
            continue
        match = GATE_RE.match(str(text))
        if not match:
            raise ValueError(f"gate {metric}: {text!r} is not a gate (write e.g. '>= 0.7')")
        parsed.append(Gate(metric, match.group(1) or ">=", float(match.group(2))))
    return parsed


def _status(gate: Gate, value: float, low: float | None, high: float | None) -> str:
    """met, missed or uncertain by the module's rule (value is known)."""
    passes = GATE_OPS[gate.op]
    if passes(value, gate.threshold):
        return "met"
    if low is None or high is None:
        return "missed"
    if gate.op == "==":
        reaches = low <= gate.threshold <= high
    else:
        best = high if gate.op in (">=", ">") else low
        reaches = passes(best, gate.threshold)
    return "uncertain" if reaches else "missed"


def judge_quality(report: Mapping[str, Any],
                  gates: Mapping[str, str | float] | Iterable[Gate]) -> list[dict[str, Any]]:
    """Each gate judged on each version of a live_quality report (versions sorted, gates in
    their order): {"version", "metric", "op", "threshold", "value", "low", "high", "n",
    "status"}, the status one of STATUSES by the rule in the module docstring."""
    judged = []
    for version, entry in sorted(report["versions"].items()):
        for gate in _gates(gates):
            measured = entry["metrics"].get(gate.metric)
            value = measured["value"] if measured else None
            low = measured["low"] if measured else None
            high = measured["high"] if measured else None
            if measured is None:
                status = "unmeasured"
            elif value is None:
                status = "not_enough"
            else:
                status = _status(gate, value, low, high)
            judged.append({"version": version, "metric": gate.metric, "op": gate.op,
                           "threshold": gate.threshold, "value": value, "low": low,
                           "high": high, "n": entry["n"], "status": status})
    return judged


# ------------------------------------------------------------------ the monitoring flow's readout

def monitoring_report(folder: Any, task: str, gates: Mapping[str, str | float] | Iterable[Gate],
                      *, now: datetime, window_seconds: float,
                      labels: pd.DataFrame | None = None, keys: Sequence[str] = (),
                      label_field: str | None = None, timestamp_field: str | None = None,
                      min_samples: int = 30, k: int = 10) -> dict[str, Any]:
    """The monitoring flow's live quality: the prediction log in `folder` over the window
    before `now`, each answer's outcome from POST /feedback (feedback.joined) or, where no
    client sent one, from the label source as it grows (label_outcomes: the entity's earliest
    label at or after the answer, within the window), judged per version (live_quality) and
    against the spec's slos.quality gates (judge_quality). {"logged": 0, ...} when nothing
    was logged in the window."""
    from mlstack.runtime.feedback import joined

    since = now - timedelta(seconds=window_seconds)
    frame = joined(folder, since=since)
    frame = frame[_utc(frame["ts"]) < pd.Timestamp(now)] if len(frame) else frame
    base: dict[str, Any] = {"window_seconds": window_seconds, "logged": len(frame)}
    if frame.empty:
        return {**base, "from_feedback": 0, "from_labels": 0, "quality": None, "judged": []}
    from_feedback = int(frame["outcome"].notna().sum())
    from_labels = 0
    if labels is not None and label_field and timestamp_field and keys and all(
            key in frame for key in keys):
        missing = frame["outcome"].isna().to_numpy()
        joined_labels = label_outcomes(frame[missing].drop(columns=["outcome"]), labels,
                                       list(keys), label_field, timestamp_field, window_seconds)
        frame = frame.copy()
        frame.loc[missing, "outcome"] = joined_labels["outcome"].to_numpy()
        from_labels = int(joined_labels["outcome"].notna().sum())
    quality = live_quality(frame, task, now=now, min_samples=min_samples, k=k)
    return {**base, "from_feedback": from_feedback, "from_labels": from_labels,
            "quality": quality, "judged": judge_quality(quality, gates)}
