"""Generate this blueprint's small data set, deterministically (seeded; nothing downloaded).

Customers get a monthly profile snapshot for six months; each churn label is observed 1-20
days after one of them (so a time split has history on both sides). Churn depends on tenure,
charges, support calls and the contract, with noise; a good model reaches an AUC near 0.85.

    python make_data.py   # rewrites data/*.parquet
"""

from pathlib import Path

import numpy as np
import pandas as pd

SEED = 7
CUSTOMERS = 2000
SNAPSHOTS = 6
START = pd.Timestamp("2026-01-01", tz="UTC")


def main(out: Path = Path(__file__).parent / "data") -> None:
    rng = np.random.default_rng(SEED)
    ids = np.arange(1001, 1001 + CUSTOMERS)
    tenure0 = rng.integers(0, 72, CUSTOMERS)
    charges = rng.uniform(18, 120, CUSTOMERS).round(2)
    monthly_contract = rng.random(CUSTOMERS) < 0.55
    rows = []
    for month in range(SNAPSHOTS):
        ts = START + pd.DateOffset(months=month)
        calls = rng.poisson(1.0 + 1.5 * monthly_contract, CUSTOMERS)
        rows.append(pd.DataFrame({
            "customer_id": ids,
            "event_timestamp": ts,
            "tenure_months": tenure0 + month,
            "monthly_charges": (charges * (1 + 0.01 * month)).round(2),
            "support_calls": calls,
            "is_monthly_contract": monthly_contract.astype("int64"),
        }))
    customers = pd.concat(rows, ignore_index=True)
    # each customer's outcome is observed 1-20 days after one of its snapshots
    observed = rng.integers(0, SNAPSHOTS, CUSTOMERS)
    seen = customers.iloc[observed * CUSTOMERS + np.arange(CUSTOMERS)]
    logit = (-1.2 - 0.05 * seen["tenure_months"].to_numpy() + 0.025 * seen["monthly_charges"]
             .to_numpy() + 0.45 * seen["support_calls"].to_numpy()
             + 1.3 * seen["is_monthly_contract"].to_numpy())
    churned = rng.random(CUSTOMERS) < 1 / (1 + np.exp(-logit))
    labels = pd.DataFrame({
        "customer_id": ids,
        "event_timestamp": pd.DatetimeIndex(seen["event_timestamp"])
        + pd.to_timedelta(rng.integers(1, 21, CUSTOMERS), unit="D"),
        "churned": churned.astype("int64"),
    })
    labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True)
    out.mkdir(parents=True, exist_ok=True)
    customers.to_parquet(out / "customers.parquet", index=False)
    labels.to_parquet(out / "churn_labels.parquet", index=False)


if __name__ == "__main__":
    main()
