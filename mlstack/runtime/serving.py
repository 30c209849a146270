"""The service's input path: request rows -> online features -> model input -> predictions.

No pandas per request: the online store's answer becomes one numpy array per fetched column
(in the spec's dtype), the generated transforms compute over those arrays (the same code and
dtypes training used: mlstack.runtime.model_input), and the model reads one float64 matrix. A
row gets null (None) when its entity has no online feature values (unknown key, or older than
the view's TTL) or when its model input is not finite (say, a transform divided by zero): one
such row must not fail the other requests that share its adaptive batch.

    inputs = ModelInput(online_rows=store.online_rows, schema=transforms.SCHEMA,
                        request_keys=REQUEST_KEYS, key_attributes=("customer_id",))
    batch = inputs(rows)                            # keys, found positions, columns, matrix
    predictions(batch, served.score)                -> [value | None, ...]
    served(batch, served.score)                     -> [(value | None, input row | None), ...]
    json_body(values)                               -> the answer's JSON bytes
    feature_records(batch)                          -> [{keys, model columns}, ...]

Ranking (`/rank`): a group key and its candidates become rows (`candidate_rows`), scored as
one call of the batcher; `ranked` orders them by score, descending, ties in request order,
and the candidates without a score (no online features, or an input that is not finite)
last, in request order, with score None; `top_k` keeps the first k of that list.

    rows = candidate_rows(("query_id", 7), candidates, ("doc_id",), ("doc_id",))
    ranked(candidates_keys, scores, top_k=10)       -> [{doc_id, score}, ...]

Also: the batching settings a version starts with (`batching_settings`: the deploy's measured
profile when there is one, else the compiled ones) and the request row limit (`check_rows`).
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Batch", "ModelInput", "batching_settings", "candidate_rows", "check_model_columns",
           "check_rows", "dropped_rows_counter", "feature_records", "json_body", "predictions",
           "ranked", "served", "shed_response", "unzip_served"]


def check_model_columns(tag: object, metadata: Mapping[str, Any],
                        model_columns: Sequence[str]) -> None:
    """Refuse (RuntimeError) a model whose lineage says it was trained on other columns."""
    trained_on = metadata.get("model_columns")
    if trained_on is not None and list(trained_on) != list(model_columns):
        raise RuntimeError(
            f"model {tag} was trained on columns {list(trained_on)}, but this service "
            f"computes {list(model_columns)}: retrain for the current spec"
        )


class Batch(NamedTuple):
    """One call's rows: their request keys (tuples in request_keys order), the positions of
    the rows found online, and those rows' model input: by column (model order, declared
    dtypes) and as one float64 matrix."""

    keys: list[tuple[Any, ...]]
    found: np.ndarray
    columns: dict[str, np.ndarray]
    matrix: np.ndarray


class ModelInput:
    """Request rows -> Batch. `online_rows` (the store's: key tuples -> found mask and
    fetched arrays) is called under a lock: one lookup at a time per process. `schema` is
    the generated transforms' InputSchema; `key_attributes` are the request row model's
    attribute names of `request_keys` (a mapping row is read by key). `request_fields`
    (name -> spec dtype) are values the rows carry themselves, read like the keys (by
    `field_attributes`) and given to the transforms and the model beside the fetched
    columns."""

    def __init__(
        self,
        *,
        online_rows: Callable[[list[tuple[Any, ...]]], Any],
        schema: Any,
        request_keys: Sequence[str],
        key_attributes: Sequence[str] | None = None,
        request_fields: Mapping[str, str] | None = None,
        field_attributes: Sequence[str] | None = None,
    ) -> None:
        from mlstack.runtime.model_input import NUMPY_DTYPES

        self.online_rows = online_rows
        self.schema = schema
        self.request_keys = tuple(request_keys)
        self.key_attributes = tuple(key_attributes or request_keys)
        fields = dict(request_fields or {})
        self.request_fields = tuple(fields)
        self.field_attributes = tuple(field_attributes or fields)
        self.field_dtypes = {name: NUMPY_DTYPES[dtype] for name, dtype in fields.items()}
        self.model_columns = tuple(schema.model_columns)
        self._lock = threading.Lock()

    def keys_of(self, rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        attributes, names = self.key_attributes, self.request_keys
        return [tuple(row[k] for k in names) if isinstance(row, Mapping)
                else tuple(getattr(row, a) for a in attributes) for row in rows]

    def warm_up(self, row: Mapping[str, Any]) -> None:
        """One lookup and one model input, so the first request pays for neither."""
        self([row])

    def fields_of(self, rows: Sequence[Any], positions: Sequence[int]) -> dict[str, np.ndarray]:
        """The request fields of the rows at `positions`, one array per field in its dtype."""
        out = {}
        for name, attribute in zip(self.request_fields, self.field_attributes, strict=True):
            values = [rows[i][name] if isinstance(rows[i], Mapping)
                      else getattr(rows[i], attribute) for i in positions]
            out[name] = np.array(values, dtype=self.field_dtypes[name])
        return out

    def __call__(self, rows: Sequence[Any]) -> Batch:
        keys = self.keys_of(rows)
        with self._lock:
            got = self.online_rows(keys)
        found = np.flatnonzero(got.found)
        if not len(found):
            return Batch(keys, found, {c: np.empty(0) for c in self.model_columns},
                         np.empty((0, len(self.model_columns))))
        fetched = got.columns
        if self.request_fields:
            fetched = {**fetched, **self.fields_of(rows, found.tolist())}
        columns = self.schema.columns(fetched)
        return Batch(keys, found, columns, self.schema.stack(columns))


def settle_heap() -> int:
    """Called once a worker has loaded what it serves with (model, feature store, service):
    collect what loading left behind, then freeze the rest out of the garbage collector's
    sight (gc.freeze). Those objects live as long as the worker, and a full collection no
    longer walks them: it walks only what requests make. Measured with a heap like a
    worker's (feast, bentoml, pandas loaded) and the prediction log's queue holding each
    request's rows until its writer takes them: 15 -> 1.3 us of collection per request.
    Returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def predictions(batch: Batch, score: Callable[[np.ndarray], Any]) -> list[Any]:
    """`score` of each row's model input, in request order; None for a row not found online
    or whose input is not finite (those are not passed to `score`)."""
    out: list[Any] = [None] * len(batch.keys)
    if not len(batch.found):
        return out
    matrix = batch.matrix
    scorable = np.isfinite(matrix).all(axis=1)
    if scorable.all():
        positions, values = batch.found.tolist(), np.asarray(score(matrix)).tolist()
    elif scorable.any():
        positions = batch.found[scorable].tolist()
        values = np.asarray(score(matrix[scorable])).tolist()
    else:
        return out
    for position, value in zip(positions, values, strict=True):
        out[position] = value
    return out


def served(batch: Batch, score: Callable[[np.ndarray], Any]) -> list[tuple[Any, Any]]:
    """`predictions`, each with the row's model input as served (a row of the batch's float64
    matrix, None for a row not found online): what the prediction log records. One tuple per
    row, so the batcher hands each request its own rows."""
    values = predictions(batch, score)
    inputs: list[Any] = [None] * len(batch.keys)
    for index, position in enumerate(batch.found.tolist()):
        inputs[position] = batch.matrix[index]
    return list(zip(values, inputs, strict=True))


def unzip_served(rows: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """(the predictions, the model inputs) of `served`'s rows."""
    return [value for value, _ in rows], [inputs for _, inputs in rows]


def feature_records(batch: Batch, request_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Each row's keys and model input (None for a NaN or infinite value; every model column
    None for a row not found online), in request order."""
    names = list(batch.columns)
    values = []
    for array in batch.columns.values():
        items = array.tolist()
        if array.dtype.kind == "f":
            finite = np.isfinite(array).tolist()
            items = [v if ok else None for v, ok in zip(items, finite, strict=True)]
        values.append(items)
    by_position = {p: dict(zip(names, row, strict=True))
                   for p, row in zip(batch.found.tolist(), zip(*values, strict=True),
                                     strict=True)}
    empty = dict.fromkeys(names)
    return [{**dict(zip(request_keys, key, strict=True)), **by_position.get(i, empty)}
            for i, key in enumerate(batch.keys)]


def candidate_rows(
    group: tuple[str, Any] | None,
    candidates: Sequence[Any],
    keys: Sequence[str],
    attributes: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A ranking request's rows: each candidate's keys (read by `attributes`, the candidate
    model's attribute names of `keys`, or by key from a mapping), with the group key added
    when it is a request key too (`group`: its name and value, None when it is not). Returns
    (the rows to score, each candidate's own keys for the answer)."""
    attributes = tuple(attributes or keys)
    own = [{k: c[k] for k in keys} if isinstance(c, Mapping)
           else {k: getattr(c, a) for k, a in zip(keys, attributes, strict=True)}
           for c in candidates]
    if group is None:
        return own, own
    name, value = group
    return [{**c, name: value} for c in own], own


def ranked(candidates: Sequence[Mapping[str, Any]], scores: Sequence[Any],
           top_k: int | None = None) -> list[dict[str, Any]]:
    """Candidates with their scores, best first: by score descending, equal scores in request
    order; candidates without a score (None) after every scored one, in request order. With
    `top_k`, the first `top_k` of that order."""
    if len(candidates) != len(scores):
        raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
    scored = [i for i, s in enumerate(scores) if s is not None]
    order = sorted(scored, key=lambda i: -scores[i])  # stable: ties keep request order
    order += [i for i, s in enumerate(scores) if s is None]
    if top_k is not None:
        order = order[:top_k]
    return [{**candidates[i], "score": scores[i]} for i in order]


def json_body(values: list[Any]) -> bytes:
    """The JSON of an answer (/predict's list of predictions), written once: the service
    returns it as a ready response, so BentoML neither validates the answer against its
    annotation nor builds that annotation's JSON schema again for every answer (about a
    quarter of a worker's time under load, issue 20). A value that is not finite is null, as
    pydantic writes it."""
    try:
        return json.dumps(values, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        return json.dumps([v if not isinstance(v, float) or np.isfinite(v) else None
                           for v in values], separators=(",", ":")).encode()


_DROPPED_ROWS: Any = None


def dropped_rows_counter() -> Any:
    """The service's Prometheus counter of the prediction log's dropped rows (label:
    version), in BentoML's /metrics. One per process: a service module imported again in the
    same process (tests import several) gets the same counter, not a duplicate series."""
    global _DROPPED_ROWS
    if _DROPPED_ROWS is None:
        import bentoml

        _DROPPED_ROWS = bentoml.metrics.Counter(
            name="mlstack_prediction_log_dropped_rows",
            documentation="Rows of answers the prediction log dropped (full queue, failed "
                          "write)",
            labelnames=["version"])
    return _DROPPED_ROWS


def check_rows(count: int, limit: int) -> None:
    """Refuse a request with more rows than `limit`: HTTP 413 from a BentoML service."""
    if count > limit:
        from http import HTTPStatus

        from bentoml.exceptions import BentoMLException

        raise BentoMLException(
            f"{count} rows in one request; this service takes at most {limit} "
            "(serving.max_request_rows)",
            error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )


def batching_settings(profile: str | Path, compiled: Mapping[str, Any]) -> dict[str, Any]:
    """The adaptive batching a service starts with: the `batching` of the deploy's measured
    serving profile (a JSON file written next to the version's code before it starts), else
    the compiled settings. Says which ('source': 'measured' or 'compiled')."""
    try:
        measured = json.loads(Path(profile).read_text(encoding="utf-8"))["batching"]
        enabled = bool(measured["enabled"])
        size, latency = int(measured["max_batch_size"]), int(measured["max_latency_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return {**compiled, "source": "compiled"}
    if enabled and (size < 2 or latency < 1):  # BentoML refuses a batch size of 1
        return {**compiled, "source": "compiled"}
    return {"enabled": enabled, "max_batch_size": size, "max_latency_ms": latency,
            "source": "measured"}


def shed_response(shed: Exception) -> Any:
    """The 503 of a request the batcher shed (queued past its budget), in the documented error
    shape (the contract middleware adds Retry-After): returned rather than raised, so BentoML
    does not log a traceback for each refusal while the service is overloaded."""
    from starlette.responses import Response

    from mlstack.runtime.http_contract import JSON, error_json

    return Response(error_json(503, str(shed), []), status_code=503, media_type=JSON)
