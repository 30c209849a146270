"""Generate this blueprint's small data set, deterministically (seeded; nothing downloaded).

Card transactions over 30 days, shaped like card fraud: about 2.6% are fraudulent. Some cards
are compromised at a random moment and then used in a short burst: larger amounts than the
card usually spends, card not present, far from home, at night, at risky merchants. Each
transaction row carries what the authorization system knew at that moment (the card's
activity in the last hour, day and 30 days, this transaction included); merchants get a
daily risk snapshot. Legitimate spending overlaps every signal, so no single one gives the
label away; a gradient-boosted classifier reaches an AUC near 0.95 on the latest fifth.

    python make_data.py [OUT]   # rewrites OUT (default: data/) *.parquet
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 23
CARDS = 1200
MERCHANTS = 120
DAYS = 30
COMPROMISED = 0.05  # fraction of cards used by a fraudster at some point
START = pd.Timestamp("2026-02-01", tz="UTC")
# category: (risk 0-2, chance a merchant sells online only, share of merchants)
CATEGORIES = {"grocery": (0, 0.05, 0.2), "fuel": (0, 0.0, 0.16), "restaurant": (0, 0.1, 0.14),
              "retail": (1, 0.3, 0.1), "travel": (1, 0.6, 0.1), "electronics": (2, 0.5, 0.1),
              "digital_goods": (2, 1.0, 0.08), "gift_cards": (2, 0.7, 0.12)}


def merchants(rng: np.random.Generator) -> pd.DataFrame:
    names = sorted(CATEGORIES)
    category = rng.choice(names, MERCHANTS, p=[CATEGORIES[c][2] for c in names])
    risk = np.array([CATEGORIES[c][0] for c in category], dtype="int64")
    online = (rng.random(MERCHANTS) < [CATEGORIES[c][1] for c in category]).astype("int64")
    base_rate = rng.lognormal(np.log(0.002) + 0.7 * risk, 0.5)
    rows = []
    for day in range(-1, DAYS):
        rows.append(pd.DataFrame({
            "merchant_id": np.arange(1, MERCHANTS + 1, dtype="int64"),
            "event_timestamp": START + pd.Timedelta(days=day),
            "chargeback_rate_90d": np.clip(base_rate * rng.lognormal(0, 0.1, MERCHANTS), 0, 1)
            .round(4),
            "category_risk": risk,
            "is_online": online,
        }))
    return pd.concat(rows, ignore_index=True)


def transactions(rng: np.random.Generator, merchant_risk: np.ndarray,
                 merchant_online: np.ndarray) -> pd.DataFrame:
    typical = rng.lognormal(3.4, 0.5, CARDS)  # what each card usually spends
    per_day = rng.gamma(2.0, 0.1, CARDS)
    weight_legit = np.where(merchant_risk == 0, 3.0, np.where(merchant_risk == 1, 1.5, 0.5))
    weight_fraud = np.where(merchant_risk == 2, 2.5, np.where(merchant_risk == 1, 1.5, 0.8))
    parts = []
    for card in range(CARDS):
        n = rng.poisson(per_day[card] * DAYS)
        hour = rng.normal(14, 4.5, n) % 24  # people shop in the day, some at night
        t = rng.integers(0, DAYS, n) * 86400 + hour * 3600
        spree = rng.random(n) < 0.08  # a few purchases come in quick runs (a shopping trip)
        t = np.where(spree, np.roll(t, 1) + rng.exponential(900, n), t)
        m = rng.choice(MERCHANTS, n, p=weight_legit / weight_legit.sum())
        parts.append(pd.DataFrame({
            "card": card, "t": t, "merchant": m,
            "amount": typical[card] * rng.lognormal(0, 0.7, n),
            "card_present": (rng.random(n) < np.where(merchant_online[m] == 1, 0.0, 0.92)),
            "distance_km": rng.exponential(np.where(rng.random(n) < 0.05, 600.0, 12.0)),
            "is_fraud": False,
        }))
    for card in np.flatnonzero(rng.random(CARDS) < COMPROMISED):
        n = rng.integers(1, 7)
        day = rng.integers(0, DAYS)
        night = rng.random() < 0.4  # half the bursts happen in the small hours
        start = day * 86400 + 3600 * (rng.uniform(1, 4) if night else rng.uniform(0, 24))
        t = start + rng.exponential(1200, n).cumsum()
        m = rng.choice(MERCHANTS, n, p=weight_fraud / weight_fraud.sum())
        parts.append(pd.DataFrame({
            "card": card, "t": t, "merchant": m,
            "amount": typical[card] * rng.lognormal(0.6, 0.9, n),
            "card_present": rng.random(n) < 0.35,
            "distance_km": rng.exponential(np.where(rng.random(n) < 0.4, 500.0, 15.0)),
            "is_fraud": True,
        }))
    tx = pd.concat(parts, ignore_index=True)
    tx = tx[tx["t"] < DAYS * 86400].sort_values(["t", "card"], kind="stable")
    # whole, strictly increasing seconds: no card has two transactions at the same instant
    rank = np.arange(len(tx))
    tx["t"] = np.maximum.accumulate(np.floor(tx["t"].to_numpy()).astype("int64") - rank) + rank
    tx = tx.reset_index(drop=True)
    return tx


def card_activity(tx: pd.DataFrame) -> pd.DataFrame:
    """Per transaction: the card's activity up to and including it (what authorization saw)."""
    count_1h = np.zeros(len(tx), dtype="int64")
    count_24h = np.zeros(len(tx), dtype="int64")
    avg_30d = np.zeros(len(tx))
    for _, rows in tx.groupby("card", sort=True):
        idx = rows.index.to_numpy()
        t = rows["t"].to_numpy()
        cum = np.concatenate([[0.0], rows["amount"].to_numpy().cumsum()])
        end = np.arange(1, len(t) + 1)
        for window, out in ((3600, count_1h), (86400, count_24h)):
            out[idx] = end - np.searchsorted(t, t - window, side="right")
        first = np.searchsorted(t, t - 30 * 86400, side="right")
        avg_30d[idx] = (cum[end] - cum[first]) / (end - first)
    return pd.DataFrame({"card_txn_count_1h": count_1h, "card_txn_count_24h": count_24h,
                         "card_amount_avg_30d": avg_30d.round(2)})


def main(out: Path = Path(__file__).parent / "data") -> None:
    rng = np.random.default_rng(SEED)
    merchant_days = merchants(rng)
    first_day = merchant_days[merchant_days["event_timestamp"] == START - pd.Timedelta(days=1)]
    tx = transactions(rng, first_day["category_risk"].to_numpy(),
                      first_day["is_online"].to_numpy())
    tx = pd.concat([tx, card_activity(tx)], axis=1)
    stamp = START + pd.to_timedelta(tx["t"], unit="s")
    table = pd.DataFrame({
        "transaction_id": np.arange(900001, 900001 + len(tx), dtype="int64"),
        "card_id": (tx["card"] + 40001).astype("int64"),
        "merchant_id": (tx["merchant"] + 1).astype("int64"),
        "event_timestamp": stamp,
        "amount": tx["amount"].round(2),
        "card_present": tx["card_present"].astype("int64"),
        "distance_km": tx["distance_km"].round(1),
        "hour_of_day": stamp.dt.hour.astype("int64"),
        "card_txn_count_1h": tx["card_txn_count_1h"],
        "card_txn_count_24h": tx["card_txn_count_24h"],
        "card_amount_avg_30d": tx["card_amount_avg_30d"],
        "is_fraud": tx["is_fraud"].astype("int64"),
    })
    # the risk job's last snapshot is taken when the sample ends, at its last transaction:
    # every feature source is current at that moment (`mlstack init` moves it to now, so the
    # freshness SLO holds from the start)
    last = merchant_days[merchant_days["event_timestamp"] == merchant_days["event_timestamp"].max()]
    merchant_days = pd.concat([merchant_days, last.assign(event_timestamp=stamp.max())],
                              ignore_index=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # zstd keeps the unique ids and timestamps small (the blueprint ships its data)
    merchant_days.to_parquet(out / "merchants.parquet", index=False, compression="zstd")
    table.to_parquet(out / "transactions.parquet", index=False, compression="zstd")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:2]))
