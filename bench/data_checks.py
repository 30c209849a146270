"""The spec's data checks on 1M rows of churn-shaped data: mlstack's hand-written checks
(mlstack.runtime.checks: the dtype contract, then every data check) against Pandera (a
DataFrameSchema built from the same spec, validated lazily so it reports every failure case).

Run: `python -m bench.data_checks [rows] [rounds]` (pandera installed in the venv; it is not a
dependency). Both sides run in this process, on the same frame, in interleaved rounds (hand,
pandera, hand, ...), so background load hits them alike; each figure is the median of its
rounds. Two frames: a clean one (every check passes) and a dirty one (about 1% of rows break
each check), since reporting failure cases is where lazy validation spends its time.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import pandas as pd

from mlstack.runtime.checks import DataChecks, check_failures, dtype_failures
from mlstack.runtime.dtypes import found_type
from mlstack.runtime.sources import SourceSpec

COLUMNS = {"customer_id": "int64", "event_timestamp": "timestamp", "tenure_months": "int64",
           "monthly_charges": "float64", "support_calls": "int64",
           "is_monthly_contract": "int64", "plan": "string"}
CHECKS = DataChecks(not_null=("customer_id", "monthly_charges", "tenure_months"),
                    unique=("customer_id", "event_timestamp"),
                    ranges={"tenure_months": (0.0, 600.0), "monthly_charges": (0.0, 1000.0)},
                    allowed_values={"is_monthly_contract": (0, 1)}, min_rows=1000,
                    max_null_fraction=0.1, regex={"plan": "[a-z]+_v[0-9]"},
                    monotonic=("customer_id",), freshness={"customer_profile": 45 * 86400})
SOURCE = SourceSpec(name="customers", path="data/customers.parquet", format="parquet",
                    timestamp_field="event_timestamp", columns=COLUMNS, checks=CHECKS)
# each column's type as a parquet footer names it (what ingest passes the dtype contract)
FOUND = {c: found_type("timestamp[ns, tz=UTC]" if d == "timestamp" else d)
         for c, d in COLUMNS.items()}


def churn_frame(rows: int, dirty: bool, seed: int = 7) -> pd.DataFrame:
    """`rows` rows like churn's customers source (8 rows per customer, in time order per
    customer), plus a `plan` text column; `dirty`: about 1% of rows break each check."""
    rng = np.random.default_rng(seed)
    customers = rows // 8
    ids = np.repeat(np.arange(customers, dtype="int64"), 8)[:rows]
    now = pd.Timestamp.now(tz="UTC").floor("s")
    days = np.tile(np.arange(8, 0, -1), customers)[:rows] * 3  # newest row is 3 days old
    frame = pd.DataFrame({
        "customer_id": ids,
        "event_timestamp": now - pd.to_timedelta(days, unit="D"),
        "tenure_months": rng.integers(0, 72, rows),
        "monthly_charges": rng.uniform(20, 120, rows).round(2),
        "support_calls": rng.integers(0, 10, rows),
        "is_monthly_contract": rng.integers(0, 2, rows),
        "plan": rng.choice(["basic_v1", "pro_v2", "team_v3"], rows),
    })
    if dirty:
        bad = rng.random(rows) < 0.01
        frame.loc[bad, "monthly_charges"] = np.nan  # not_null
        frame.loc[rng.random(rows) < 0.01, "tenure_months"] = 900  # ranges
        frame.loc[rng.random(rows) < 0.01, "is_monthly_contract"] = 2  # allowed_values
        frame.loc[rng.random(rows) < 0.01, "plan"] = "Legacy"  # regex
        back = np.flatnonzero(rng.random(rows) < 0.01)
        frame.loc[back, "event_timestamp"] = now - pd.Timedelta(days=400)  # monotonic
    return frame


def hand_written(frame: pd.DataFrame) -> int:
    """Today's checks: the dtype contract, then the data checks. The number of failures."""
    failures, _ = dtype_failures(SOURCE, frame, FOUND)
    return len(failures) + len(check_failures(SOURCE, frame))


def pandera_schema():
    """The same spec as a Pandera DataFrameSchema. Checks Pandera has no builtin for (the
    null share, min_rows, monotonic per key, freshness) are custom checks written here."""
    import pandera.pandas as pa

    limit, ttl = CHECKS.max_null_fraction, min(CHECKS.freshness.values())
    null_share = pa.Check(lambda s: s.isna().mean() <= limit, ignore_na=False,
                          name="max_null_fraction")
    dtypes = {"int64": "int64", "float64": "float64", "string": object,
              "timestamp": pd.DatetimeTZDtype("ns", "UTC")}
    columns = {}
    for name, dtype in COLUMNS.items():
        checks = [null_share]
        if name in CHECKS.ranges:
            low, high = CHECKS.ranges[name]
            checks.append(pa.Check.in_range(low, high))
        if name in CHECKS.allowed_values:
            checks.append(pa.Check.isin(list(CHECKS.allowed_values[name])))
        if name in CHECKS.regex:
            checks.append(pa.Check.str_matches(f"(?:{CHECKS.regex[name]})\\Z"))
        columns[name] = pa.Column(dtypes[dtype], checks, nullable=name not in CHECKS.not_null)
    stamp, keys = SOURCE.timestamp_field, list(CHECKS.monotonic)
    frame_checks = [
        pa.Check(lambda df: len(df) >= CHECKS.min_rows, name="min_rows"),
        pa.Check(lambda df: ~(df[stamp] < df.groupby(keys, sort=False)[stamp].shift()),
                 name="monotonic"),
        pa.Check(lambda df: (pd.Timestamp.now(tz="UTC") - df[stamp].max()).total_seconds()
                 <= ttl, name="freshness"),
    ]
    return pa.DataFrameSchema(columns, checks=frame_checks, unique=list(CHECKS.unique))


def with_pandera(schema, frame: pd.DataFrame) -> int:
    """Lazy validation: every failure case. The number of checks that failed (a frame-wide
    check counts once, though Pandera lists its failure cases under every column)."""
    import pandera.errors

    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        return int(cases["check"].nunique())
    return 0


def measure(rows: int = 1_000_000, rounds: int = 5) -> dict:
    import pandera

    schema = pandera_schema()
    out = {"rows": rows, "rounds": rounds, "pandas": pd.__version__,
           "pandera": pandera.__version__, "python": sys.version.split()[0]}
    for kind in ("clean", "dirty"):
        frame = churn_frame(rows, dirty=kind == "dirty")
        sides = {"hand": lambda f=frame: hand_written(f),
                 "pandera": lambda f=frame: with_pandera(schema, f)}
        times: dict[str, list[float]] = {name: [] for name in sides}
        found: dict[str, int] = {}
        for _ in range(rounds):
            for name, run in sides.items():  # interleaved: hand, pandera, hand, ...
                start = time.perf_counter()
                found[name] = run()
                times[name].append(time.perf_counter() - start)
        hand, pand = (statistics.median(times[n]) for n in ("hand", "pandera"))
        out[kind] = {"hand_s": round(hand, 3), "pandera_s": round(pand, 3),
                     "ratio": round(pand / hand, 2), "failed_checks": found,
                     "hand_runs": [round(t, 3) for t in times["hand"]],
                     "pandera_runs": [round(t, 3) for t in times["pandera"]]}
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(measure(*args), indent=2))
