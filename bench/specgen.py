"""Generated specs for the compile-scaling section: F features over E entities and sources.

Each entity has its own key and its own file source; the first min(F, E) sources have one
feature view each, and the F fields are spread over those views round-robin. One transform
per ten fields; the model reads every field and every transform. The label source carries
every entity key. Files are named but not written: lint and compile never read the data.
"""

from __future__ import annotations

import yaml


def make_spec(features: int, entities: int = 100) -> dict:
    views = max(1, min(features, entities))
    fields_of: dict[int, list[str]] = {v: [] for v in range(views)}
    for f in range(features):
        fields_of[f % views].append(f"f{f:04d}")
    sources, entity_list, view_list = [], [], []
    for e in range(entities):
        key = f"k{e:03d}"
        entity_list.append({"name": f"e{e:03d}", "join_keys": [key]})
        columns = {key: "int64", "ts": "timestamp"}
        for name in fields_of.get(e, []):
            columns[name] = "float64"
        sources.append({"name": f"s{e:03d}", "kind": "parquet", "path": f"data/s{e:03d}.parquet",
                        "timestamp_field": "ts", "columns": columns,
                        "checks": {"not_null": [key]}})
        if e < views:
            view_list.append({"name": f"v{e:03d}", "entity": f"e{e:03d}",
                              "source": f"s{e:03d}", "ttl": "30d", "fields": fields_of[e]})
    label_columns = {f"k{e:03d}": "int64" for e in range(entities)}
    label_columns.update({"ts": "timestamp", "y": "int64"})
    sources.append({"name": "labels", "kind": "parquet", "path": "data/labels.parquet",
                    "timestamp_field": "ts", "columns": label_columns})
    refs = [f"v{v:03d}.{name}" for v in range(views) for name in fields_of[v]]
    transforms = []
    for t in range(features // 10):
        a, b = refs[t % len(refs)].split(".")[1], refs[(t + 1) % len(refs)].split(".")[1]
        transforms.append({"name": f"t{t:04d}", "expr": f"{a} / ({b} + 1)"})
    return {
        "apiVersion": "mlstack/v1",
        "kind": "System",
        "metadata": {"name": "scale", "owner": "bench"},
        "sources": sources,
        "entities": entity_list,
        "features": {"views": view_list, "transforms": transforms},
        "label": {"source": "labels", "field": "y"},
        "model": {"task": "binary_classification", "algorithm": "logistic_regression",
                  "features": refs + [t["name"] for t in transforms]},
        "training": {"split": {"by": "time", "test_fraction": 0.2}},
        "evaluation": {"metrics": ["auc"], "gates": {"auc": ">= 0.5"}},
        "serving": {"batching": "auto"},
        "slos": {"latency": {"p99_ms": 100}, "throughput_rps": 50},
        "target": {"kind": "local"},
    }


def spec_text(features: int, entities: int = 100) -> str:
    return yaml.safe_dump(make_spec(features, entities), sort_keys=False, width=100)
