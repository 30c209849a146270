"""The router's rollout modes beside the weighted split: sticky A/B and a shadow mirror.

Both are optional entries of the router's table (mlstack.ops.local.router), written by deploy:

    "sticky": {"experiment": "churn-ab-v2", "key": "customer_id"}
    "shadow": {"version": "v2", "url": "http://127.0.0.1:4102", "tolerance": 0.05}

Sticky A/B: a POST to /predict or /rank whose JSON body carries the entity key (the first
found of body["rows"][0][key], body[key], body["query"][key]; a null is no key) goes to the
arm `assign_arm(key_text(value), experiment, {version: weight})` picks (stable across requests,
processes and restarts); the other versions follow only when that one is down or refuses
(counted as fallbacks). A request without a key keeps the smooth weighted round-robin (counted
as unkeyed); keyed requests do not move the round-robin. Counters reset when the entry changes.

Shadow mirror: after the client has its answer to a POST /predict or /rank, a 2xx answer is
queued (bounded: a full queue drops the copy, counted; the request never waits) and one
daemon thread sends the request to the shadow, which serves no client, with
`X-Mlstack-Shadow: 1`, then compares the two answers (`compare`) and keeps the agreement,
the score differences and both latencies. Its answers are not the router's answers (not in
/metrics). A new shadow version or url resets the statistics; copies queued for a shadow
that is gone or replaced are dropped unsent.
"""

from __future__ import annotations

import http.client
import json
import math
import queue
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mlstack.ops.local.judge import percentile
from mlstack.runtime.assignment import assign_arm, key_text

ROUTES = ("/predict", "/rank")  # the paths that are split stickily and mirrored
SHADOW_HEADER = "X-Mlstack-Shadow"
SHADOW_QUEUE_SIZE = 256  # copies waiting for the shadow; one more is dropped
LATENCIES_KEPT = 20_000  # per side, for the percentiles
TOP_K = 10  # a ranking's overlap is judged on its first k candidates


def parse_shadow(entry: object) -> dict | None:
    """The table's "shadow" entry, validated (ValueError: the table is malformed)."""
    if entry is None:
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("version"), str) and entry["version"]
            and isinstance(entry.get("url"), str) and entry["url"].startswith("http://")):
        raise ValueError(f"the shadow is malformed: {entry!r}")
    tolerance = entry.get("tolerance", 0.0)
    if (isinstance(tolerance, bool) or not isinstance(tolerance, int | float)
            or not math.isfinite(tolerance) or tolerance < 0):
        raise ValueError(f"the shadow's tolerance is not a number >= 0: {tolerance!r}")
    return {"version": entry["version"], "url": entry["url"], "tolerance": float(tolerance)}


def parse_sticky(entry: object) -> dict | None:
    """The table's "sticky" entry, validated (ValueError: the table is malformed)."""
    if entry is None:
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("experiment"), str)
            and entry["experiment"] and isinstance(entry.get("key"), str) and entry["key"]):
        raise ValueError(f"the sticky entry is malformed: {entry!r}")
    return {"experiment": entry["experiment"], "key": entry["key"]}


def route_of(method: str, path: str) -> str | None:
    """/predict or /rank for a POST to either (the query string aside), else None."""
    route = path.split("?", 1)[0]
    return route if method == "POST" and route in ROUTES else None


def entity_key(body: bytes | None, key: str) -> object:
    """The entity key's value in a request body, None when absent or not JSON."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    rows = data.get("rows")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and key in rows[0]:
        return rows[0][key]
    if key in data:
        return data[key]
    query = data.get("query")
    return query.get(key) if isinstance(query, dict) else None


class StickySplit:
    """Sticky arms for the keyed requests, and the counters GET /-/router shows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entry: dict | None = None
        self._reset()

    def _reset(self) -> None:
        self.assigned: dict[str, int] = {}
        self.unkeyed = self.fallbacks = 0

    def configure(self, entry: dict | None) -> None:
        with self.lock:
            if entry != self.entry:
                self.entry = entry
                self._reset()

    def order(self, method: str, path: str, body: bytes | None,
              backends: list[dict]) -> tuple[list[dict], str] | None:
        """The backends to try, the key's arm first, and that arm; None for the weighted
        round-robin (no sticky entry, another request, or no key in the body)."""
        entry = self.entry
        if entry is None or not backends or route_of(method, path) is None:
            return None
        value = entity_key(body, entry["key"])
        if value is None:
            with self.lock:
                self.unkeyed += 1
            return None
        arm = assign_arm(key_text(value), entry["experiment"],
                         {b["version"]: b["weight"] for b in backends})
        with self.lock:
            self.assigned[arm] = self.assigned.get(arm, 0) + 1
        first = next(b for b in backends if b["version"] == arm)
        return [first] + [b for b in backends if b is not first], arm

    def answered(self, assigned: str, version: str) -> None:
        if version != assigned:
            with self.lock:
                self.fallbacks += 1

    def info(self) -> dict | None:
        with self.lock:
            if self.entry is None:
                return None
            return {**self.entry, "assigned": dict(sorted(self.assigned.items())),
                    "unkeyed": self.unkeyed, "fallbacks": self.fallbacks}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class Comparison:
    """What comparing one primary answer with its shadow's found (`compare`)."""

    comparable: bool = True
    rows_compared: int = 0
    rows_agreeing: float = 0.0  # a ranking query adds its overlap fraction
    numeric_rows: int = 0  # the score pairs behind abs_diff_sum and abs_diff_max
    abs_diff_sum: float = 0.0
    abs_diff_max: float = 0.0
    queries_compared: int = 0
    overlap_sum: float = 0.0

    def add_diff(self, a: Any, b: Any) -> float:
        diff = abs(float(a) - float(b))
        if math.isfinite(diff):
            self.numeric_rows += 1
            self.abs_diff_sum += diff
            self.abs_diff_max = max(self.abs_diff_max, diff)
        return diff


def compare(path: str, primary: bytes, shadow: bytes, tolerance: float) -> Comparison:
    """The agreement of a shadow's answer with the primary's, for /predict (a list, one
    element per row: numbers agree within `tolerance`, anything else when equal) or /rank
    ({"ranked": [{...key fields, "score": x}, ...]}: the overlap of the top min(10, primary's
    length) candidates, a candidate being its fields but the score, and the score differences
    of the candidates in both). Unparseable or mismatched shapes are not comparable."""
    try:
        a, b = json.loads(primary), json.loads(shadow)
    except ValueError:
        return Comparison(comparable=False)
    route = path.split("?", 1)[0]
    if route == "/predict":
        return _compare_rows(a, b, tolerance)
    if route == "/rank":
        return _compare_ranking(a, b)
    return Comparison(comparable=False)


def _compare_rows(a: object, b: object, tolerance: float) -> Comparison:
    if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)):
        return Comparison(comparable=False)
    found = Comparison()
    for x, y in zip(a, b, strict=True):
        found.rows_compared += 1
        if _is_number(x) and _is_number(y):
            agrees = found.add_diff(x, y) <= tolerance
        else:
            # both null, the same label, the same list or object (true is not 1 in JSON)
            agrees = x == y and isinstance(x, bool) == isinstance(y, bool)
        found.rows_agreeing += agrees
    return found


def _candidates(answer: object) -> list[tuple[str, object]] | None:
    """(identity, score) of each ranked candidate; None when the answer is not a ranking."""
    ranked = answer.get("ranked") if isinstance(answer, dict) else None
    if not isinstance(ranked, list) or not all(isinstance(c, dict) for c in ranked):
        return None
    return [(json.dumps({k: v for k, v in c.items() if k != "score"}, sort_keys=True),
             c.get("score")) for c in ranked]


def _compare_ranking(a: object, b: object) -> Comparison:
    first, second = _candidates(a), _candidates(b)
    if first is None or second is None:
        return Comparison(comparable=False)
    k = min(TOP_K, len(first))
    top_a, top_b = {i for i, _ in first[:k]}, {i for i, _ in second[:k]}
    overlap = len(top_a & top_b) / k if k else float(not second)  # both empty: they agree
    found = Comparison(rows_compared=1, rows_agreeing=overlap, queries_compared=1,
                       overlap_sum=overlap)
    scores = dict(reversed(second))  # the first of a repeated candidate
    for identity, score in dict(reversed(first)).items():
        other = scores.get(identity)
        if identity in scores and _is_number(score) and _is_number(other):
            found.add_diff(score, other)
    return found


def percentiles(values: Iterable[float]) -> dict:
    """p50, p95, p99 (ms, as the canary's judge computes them: judge.percentile) and the
    count."""
    ordered = sorted(values)

    def at(q: float) -> float | None:
        value = percentile(ordered, q)
        return None if value is None else round(value, 3)

    return {"p50": at(50), "p95": at(95), "p99": at(99), "n": len(ordered)}


@dataclass
class ShadowStats:
    version: str
    mirrored: int = 0  # copies sent to the shadow (answered or not)
    dropped: int = 0  # copies dropped at a full queue
    errors: int = 0  # an exception, a timeout or a non-2xx answer of the shadow
    incomparable: int = 0
    totals: Comparison = field(default_factory=Comparison)
    shadow_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))
    primary_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))

    def add(self, found: Comparison) -> None:
        if not found.comparable:
            self.incomparable += 1
            return
        t = self.totals
        t.rows_compared += found.rows_compared
        t.rows_agreeing += found.rows_agreeing
        t.numeric_rows += found.numeric_rows
        t.abs_diff_sum += found.abs_diff_sum
        t.abs_diff_max = max(t.abs_diff_max, found.abs_diff_max)
        t.queries_compared += found.queries_compared
        t.overlap_sum += found.overlap_sum

    def info(self) -> dict:
        t = self.totals
        return {"version": self.version, "mirrored": self.mirrored, "dropped": self.dropped,
                "errors": self.errors, "incomparable": self.incomparable,
                "rows_compared": t.rows_compared, "rows_agreeing": t.rows_agreeing,
                "agreement": t.rows_agreeing / t.rows_compared if t.rows_compared else None,
                "numeric_rows": t.numeric_rows, "queries_compared": t.queries_compared,
                "mean_abs_diff": t.abs_diff_sum / t.numeric_rows if t.numeric_rows else None,
                "max_abs_diff": t.abs_diff_max if t.numeric_rows else None,
                "shadow_latency_ms": percentiles(self.shadow_ms),
                "primary_latency_ms": percentiles(self.primary_ms)}


@dataclass(frozen=True)
class MirroredRequest:
    """A copy of a request that got a 2xx answer, and that answer."""

    path: str
    body: bytes | None
    headers: dict[str, str]
    status: int
    payload: bytes
    latency_ms: float


class ShadowMirror:
    """The queue of copies and the one thread that sends them to the shadow."""

    def __init__(self, timeout_s: Callable[[], float]) -> None:
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.entry: dict | None = None
        self.stats: ShadowStats | None = None
        self.generation = 0  # a copy queued for an earlier shadow is not sent
        self.queue: queue.Queue[tuple[int, MirroredRequest]] = queue.Queue(SHADOW_QUEUE_SIZE)
        self.sender: threading.Thread | None = None

    def configure(self, entry: dict | None) -> None:
        with self.lock:
            old = self.entry
            if entry is None or old is None or (entry["version"], entry["url"]) != (
                    old["version"], old["url"]):
                self.generation += 1
                self.stats = ShadowStats(entry["version"]) if entry else None
            self.entry = entry
            if entry is not None and self.sender is None:
                self.sender = threading.Thread(target=self._send_forever, daemon=True,
                                               name="shadow-mirror")
                self.sender.start()

    def offer(self, copy: MirroredRequest) -> None:
        """Queue a copy for the shadow, never waiting: a full queue drops it."""
        with self.lock:
            if self.entry is None:
                return
            generation = self.generation
        try:
            self.queue.put_nowait((generation, copy))
        except queue.Full:
            with self.lock:
                if self.stats is not None and generation == self.generation:
                    self.stats.dropped += 1

    def info(self) -> dict | None:
        with self.lock:
            return self.stats.info() if self.stats is not None else None

    def _send_forever(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while True:
            generation, copy = self.queue.get()
            with self.lock:
                entry = self.entry
                if entry is None or generation != self.generation:
                    continue  # the shadow it was queued for is gone
            try:
                connection = self._mirror(connection, entry, generation, copy)
            except Exception:  # an answer compare() cannot take apart: the thread goes on
                with self.lock:
                    if self.stats is not None and generation == self.generation:
                        self.stats.mirrored += 1
                        self.stats.incomparable += 1

    def _mirror(self, connection: http.client.HTTPConnection | None, entry: dict,
                generation: int, copy: MirroredRequest) -> http.client.HTTPConnection:
        """Send one copy to the shadow and count what came of it; the connection to keep."""
        timeout = float(self.timeout_s())
        parsed = urllib.parse.urlsplit(entry["url"])
        if connection is None or (connection.host, connection.port) != (
                parsed.hostname, parsed.port):
            if connection is not None:
                connection.close()
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port)
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        began = time.perf_counter()
        answer = _send(connection, copy)
        shadow_ms = (time.perf_counter() - began) * 1000
        if answer is None:
            connection.close()
        found = (compare(copy.path, copy.payload, answer[1], entry["tolerance"])
                 if answer is not None and 200 <= answer[0] < 300 else None)
        with self.lock:
            stats = self.stats
            if stats is not None and generation == self.generation:
                stats.mirrored += 1
                if answer is not None:
                    stats.shadow_ms.append(shadow_ms)
                    stats.primary_ms.append(copy.latency_ms)
                if found is None:
                    stats.errors += 1
                else:
                    stats.add(found)
        return connection


def _send(connection: http.client.HTTPConnection,
          copy: MirroredRequest) -> tuple[int, bytes] | None:
    """The shadow's status and body, None for no answer (an error or a timeout). A kept-alive
    connection the shadow closed meanwhile gets one more try on a new one."""
    headers = {**copy.headers, SHADOW_HEADER: "1"}
    for attempt in range(2):
        reused = connection.sock is not None
        try:
            connection.request("POST", copy.path, body=copy.body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            connection.close()
            if attempt == 0 and reused:
                continue
            return None
        except (OSError, http.client.HTTPException):
            return None
        if response.will_close:
            connection.close()
        return response.status, payload
    return None


class TrafficSplit:
    """The sticky split and the shadow mirror of one router, following its table."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.sticky = StickySplit()
        self.shadow = ShadowMirror(lambda: float(table.limits["backend_timeout_s"]))
        table.on_change.append(self.configure)
        self.configure()

    def configure(self) -> None:
        self.sticky.configure(self.table.sticky)
        self.shadow.configure(self.table.shadow)

    def order(self, method: str, path: str, body: bytes | None) -> tuple[list[dict], str | None]:
        """The backends to try for a request, and the sticky arm it was assigned (or None)."""
        picked = self.sticky.order(method, path, body, self.table.backends)
        return picked if picked is not None else (self.table.order(refresh=False), None)

    def answered(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                 status: int, payload: bytes, latency_ms: float, version: str,
                 assigned: str | None) -> None:
        """After a backend's answer was written to the client."""
        if assigned is not None:
            self.sticky.answered(assigned, version)
        if self.shadow.entry is not None and 200 <= status < 300 \
                and route_of(method, path) is not None:  # no cost without a shadow
            self.shadow.offer(MirroredRequest(path, body, headers, status, payload, latency_ms))

    def info(self) -> dict:
        return {"sticky": self.sticky.info(), "shadow": self.shadow.info()}
