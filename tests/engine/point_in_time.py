"""The point-in-time oracle the Feast tests compare retrieval with, computed with pandas only."""

from __future__ import annotations

import pandas as pd


def assert_point_in_time(entity_df: pd.DataFrame, got: pd.DataFrame,
                         source: pd.DataFrame, columns, ttl: pd.Timedelta,
                         key: str = "customer_id") -> int:
    """Each row of `got` holds, per 'view__field' column, the latest source row at or before the
    entity row's timestamp and within the TTL, else null. Returns how many rows were null."""
    nulls = 0
    for (_, row), (_, result) in zip(entity_df.iterrows(), got.iterrows(), strict=True):
        rows = source[(source[key] == row[key])
                      & (source["event_timestamp"] <= row["event_timestamp"])
                      & (source["event_timestamp"] + ttl >= row["event_timestamp"])]
        for column in columns:
            field = column.split("__", 1)[1]
            if rows.empty:
                assert pd.isna(result[column]), (row.to_dict(), column)
            else:
                expected = rows.sort_values("event_timestamp")[field].iloc[-1]
                assert result[column] == expected, (row.to_dict(), column)
        nulls += rows.empty
    return nulls
