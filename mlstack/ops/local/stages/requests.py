"""The requests a deploy loads a version with (verify, canary, re-verification) and the
example request a version records."""

from __future__ import annotations

from mlstack.frontend.ir.nodes import SystemIR


def load_requests(system: SystemIR, rows: list[dict], *,
                  one_request: bool = False) -> tuple[str, list[dict]]:
    """The endpoint and bodies of the verify and canary load, from request rows known to have
    features: a ranking model whose group key is a request key is loaded as its clients call
    it, one /rank request per group of the rows (its candidates); any other model one
    /predict row per request (or, `one_request`, all the rows in one, as the serving
    version's example request was recorded)."""
    from mlstack.ops.local.worker import rank_requests

    group = system.model.group_by
    if (system.model.task == "ranking" and group is not None
            and any(k.name == group for k in system.model.request_keys)):
        return "rank", [body for _, body in rank_requests(rows, group)]
    if one_request:
        return "predict", [{"rows": rows}] if rows else []
    return "predict", [{"rows": [row]} for row in rows]


def example_rows(system: SystemIR, rows: list[dict]) -> list[dict]:
    """The rows a version records as its example request: the first row, or for a ranking
    model served by /rank the first group's rows (re-verification loads /rank with them)."""
    endpoint, bodies = load_requests(system, rows)
    if endpoint == "rank" and bodies:
        group = system.model.group_by
        return [{group: bodies[0][group], **c} for c in bodies[0]["candidates"]]
    return rows[:1]
