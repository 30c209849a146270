"""The service's prediction log: every answer of /predict and /rank, one row per request row,
in parquet partitions beside the offline store, written off the request path.

    log = PredictionLog(folder, version="v3", model_tag="churn:abc")
    request_id = new_request_id()                  # returned in a response header
    log.record(request_id, "predict", rows, outputs, features=records)   # O(1), never raises
    log.stats()      -> {"queued", "logged", "dropped", "files", "write_errors", "last_error"}
    read_log(folder, versions=["v3"], since=...)   -> pandas.DataFrame

Logging never blocks a request and never fails one. `record` appends a tuple to a bounded
queue (`max_queue` requests; a deque, so no lock and no wake-up of the writer): no pandas or
pyarrow work, no copy of the rows (the caller must not change them afterwards). When the
queue is full the request's rows are counted as dropped and the request goes on. A daemon
writer thread, started by the first record in each process (a forked worker starts its own),
looks at the queue every `POLL_SECONDS` and takes it in batches (every `flush_seconds` after
the first waiting request, or at `flush_rows` rows) and writes each batch as one parquet
file per hour. (A queue whose getter is woken by each put cost a worker one thread switch,
and the GIL handed over and back, per request: about 30 us of CPU a request at the bench's
rate.)

    folder/version=<v>/hour=YYYY-MM-DDTHH/part-<pid>-<seq>.parquet

(hive partitions: the version percent-encoded, the hour of the request in UTC). A file is
written under a temporary name starting with '.' in the same folder, which readers skip, and
renamed into place, so a reader never sees half a file. `seq` starts at the writer's start
time in microseconds, so a restarted worker that gets the same pid does not overwrite the
files of the one before. Columns:

    request_id  string         ts        timestamp[us, UTC] (taken in `record`)
    version     string         model_tag string           endpoint  string
    row         int32 (the row's position in its request)
    output      float64 (null when the service answered null)
    <field>     each entity key and request field under its own name (`request.<name>` for a
                name that is one of the columns above, or 'hour', 'outcome', 'feedback_at')
    feature.<name>   the model input as served, when `features` is given
    extra.<name>     each per-row list of `extra` (a rank position, a query id, ...)

A column whose values in one batch have types parquet cannot hold together (an int and a
string, say) is written as strings rather than failing the batch; nested values (dicts,
lists) are written as JSON text. `read_log` reads files whose column types differ (one batch
wrote ints, a later one strings) by reading such a column as strings.

Each flush also adds its requests (request_id, version, ts, endpoint, rows, hour) to the
SQLite index `folder/requests.db` (WAL, a busy timeout: the workers of a service write it at
once), in one transaction, after the parquet files: the feedback store finds a request id
there without scanning parquet. A failed write (disk full, permission denied, a value no
column can hold) never reaches a request: the rows of that file count as dropped,
`write_errors` and `last_error` say so, and the writer goes on with the next batch. A failed
index write after a written file counts as a write error, not as dropped rows (the rows are
in the log; feedback for them will not find them).

Retention: at most once a minute, after a flush, the writer deletes the hour partitions that
ended more than `retention_hours` ago (judged by the partition's name, not file times), their
index rows, and version folders left empty. `retention_hours=None` keeps everything.

Request ids are UUIDv7 (RFC 9562): a 48-bit unix time in ms, the version (7), a 12-bit
counter that keeps the ids of one process strictly increasing within a millisecond (RFC 9562
method 1, seeded at random), the variant, 62 random bits. Written as 32 lowercase hex digits;
`request_time` reads the time back and refuses anything else (a client sends it back).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import shutil
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["INDEX_FILE", "LOG_COLUMNS", "PredictionLog", "new_request_id", "open_index",
           "read_log", "request_time"]

# The SQLite index of logged requests, in the log's folder.
INDEX_FILE = "requests.db"
# The columns every log row has, in order (then request fields, features, extras).
LOG_COLUMNS = ("request_id", "ts", "version", "model_tag", "endpoint", "row", "output")
# Names a request field cannot take as its column (it is written as 'request.<name>'): the
# log's own columns, the hour partition, and the columns `feedback.joined` adds.
RESERVED_NAMES = frozenset(LOG_COLUMNS) | {"hour", "outcome", "feedback_at"}
# How long a writer waits for the index's write lock held by another worker (ms).
INDEX_BUSY_TIMEOUT_MS = 10_000
# Requests written whose index rows wait for another try, at most (older ones are given up,
# counted as a write error), and the tries at close.
MAX_UNINDEXED = 100_000
UNINDEXED_TRIES = 10
# Each writer's counters, one JSON file per version and process, in the folder (status
# sums them: mlstack.ops.local.living.prediction_log_counts).
STATS_DIR = "stats"
# Seconds between two retention passes of one writer.
RETENTION_INTERVAL_S = 60.0
# A request id's time is refused when it is before this (2020-01-01, ms) or more than a day
# ahead of this machine's clock.
_EARLIEST_MS = 1_577_836_800_000
_FUTURE_SLACK_MS = 86_400_000
_REQUEST_ID = re.compile(r"[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}")
_HOUR = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}")
_HOUR_FORMAT = "%Y-%m-%dT%H"


# ---------------------------------------------------------------- request ids

_id_lock = threading.Lock()
_id_last_ms = 0
_id_counter = 0
# the ids' random bits, read from the OS 4 KiB at a time (a syscall per id cost more than the
# rest of the id); a forked child reads its own, never its parent's
_RANDOM_BYTES = 10
_random_pool = b""
_random_used = 0


def _forget_random_pool() -> None:
    global _random_pool, _random_used
    _random_pool, _random_used = b"", 0


os.register_at_fork(after_in_child=_forget_random_pool)


def new_request_id() -> str:
    """A new UUIDv7 as 32 lowercase hex digits (no dashes); strictly increasing within this
    process (the counter bits order ids of the same millisecond; when they run out the time
    field moves on by a millisecond, as RFC 9562 allows)."""
    global _id_last_ms, _id_counter, _random_pool, _random_used
    now_ms = time.time_ns() // 1_000_000
    with _id_lock:
        if _random_used + _RANDOM_BYTES > len(_random_pool):
            _random_pool, _random_used = os.urandom(4096), 0
        random = int.from_bytes(_random_pool[_random_used:_random_used + _RANDOM_BYTES], "big")
        _random_used += _RANDOM_BYTES
        if now_ms > _id_last_ms:
            _id_last_ms, _id_counter = now_ms, random & 0x7FF  # room for 2048 more
        else:
            _id_counter += 1
            if _id_counter > 0xFFF:
                _id_last_ms, _id_counter = _id_last_ms + 1, 0
        ms, counter = _id_last_ms, _id_counter
    value = ((ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62)
             | (random >> 16) & ((1 << 62) - 1))
    return f"{value:032x}"


def request_time(request_id: object) -> float | None:
    """The unix time (seconds) in a request id of ours; None for anything else: not a str of
    32 lowercase hex digits, not version 7 with the RFC variant, or a time before 2020 or
    more than a day ahead of this clock."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        return None
    ms = int(request_id[:12], 16)
    if ms < _EARLIEST_MS or ms > time.time_ns() // 1_000_000 + _FUTURE_SLACK_MS:
        return None
    return ms / 1000.0


# ---------------------------------------------------------------- the index

def open_index(folder: str | Path) -> sqlite3.Connection:
    """A connection to the log's request index (created if missing): WAL, a busy timeout,
    autocommit off (a `with connection:` block is one transaction)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(folder / INDEX_FILE, timeout=INDEX_BUSY_TIMEOUT_MS / 1000)
    try:
        connection.execute(f"PRAGMA busy_timeout = {INDEX_BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        with connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, "
                "version TEXT NOT NULL, ts REAL NOT NULL, endpoint TEXT, "
                "rows INTEGER NOT NULL, hour TEXT NOT NULL)")
            connection.execute("CREATE INDEX IF NOT EXISTS requests_hour ON requests (hour)")
    except BaseException:
        connection.close()
        raise
    return connection


# ---------------------------------------------------------------- the log

_STOP = object()  # the queue item that ends the writer
# how often the writer looks at the queue (flush and close wake it at once)
POLL_SECONDS = 0.05
_LOGS: weakref.WeakSet[PredictionLog] = weakref.WeakSet()


_hours: dict[int, str] = {}


def _hour(ts: float) -> str:
    """The UTC hour of `ts` as YYYY-MM-DDTHH (formatted once per hour)."""
    key = math.floor(ts / 3600)
    text = _hours.get(key)
    if text is None:
        if len(_hours) > 64:
            _hours.clear()
        text = _hours[key] = time.strftime(_HOUR_FORMAT, time.gmtime(key * 3600))
    return text


def _row_count(item: Any) -> int:
    try:
        return len(item[3])
    except Exception:
        return 1


def _column_name(name: object) -> str:
    name = str(name)
    return f"request.{name}" if name in RESERVED_NAMES else name


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    dump = getattr(row, "model_dump", None)  # a pydantic request row
    if callable(dump):
        return dict(dump())
    raise TypeError(f"a request row is a mapping, not {type(row).__name__}")


def _feature_mapping(features: Any, names: Sequence[str] | None) -> Mapping[str, Any]:
    """A row's model input as served: a mapping, or a sequence (a row of the service's model
    input matrix) named by the log's `feature_names`."""
    if isinstance(features, Mapping) or hasattr(features, "model_dump"):
        return _as_mapping(features)
    values = features.tolist() if hasattr(features, "tolist") else list(features)
    if names is None or len(names) != len(values):
        raise ValueError(f"{len(values)} feature values for the names {list(names or [])}")
    return dict(zip(names, values, strict=True))


def _split_rows(item: tuple[Any, ...]) -> tuple[list[dict[str, Any]], list[Any]]:
    """One request's queue item -> (one dict per request row without its model input, each
    row's model input as given: None, a mapping or a sequence); raises on a malformed one."""
    ts, request_id, endpoint, rows, outputs, features, extra = item
    rows, outputs = list(rows), list(outputs)
    if len(outputs) != len(rows):
        raise ValueError(f"{len(outputs)} outputs for {len(rows)} rows")
    features = None if features is None else list(features)
    if features is not None and len(features) != len(rows):
        raise ValueError(f"{len(features)} feature records for {len(rows)} rows")
    extras = {} if extra is None else {str(k): list(v) for k, v in dict(extra).items()}
    for name, values in extras.items():
        if len(values) != len(rows):
            raise ValueError(f"extra {name!r}: {len(values)} values for {len(rows)} rows")
    base = {"request_id": str(request_id), "ts": int(round(float(ts) * 1_000_000)),
            "endpoint": str(endpoint)}
    flat = []
    for i, row in enumerate(rows):
        output = outputs[i]
        record = {**base, "row": i, "output": None if output is None else float(output)}
        for name, value in _as_mapping(row).items():
            record[_column_name(name)] = value
        for name, values in extras.items():
            record[f"extra.{name}"] = values[i]
        flat.append(record)
    return flat, [None] * len(rows) if features is None else features


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _array(values: list[Any]) -> Any:
    """A pyarrow array of `values`; strings when they have no common scalar type."""
    import pyarrow as pa

    try:
        array = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        array = None
    if array is None or pa.types.is_nested(array.type):
        array = pa.array([_text(v) for v in values], pa.string())
    return array


def _check_features(served: list[Any], names: Sequence[str] | None) -> None:
    """Raises on a row's model input that `_feature_columns` cannot name (a sequence of
    another length than `names`, or a sequence without names), so that only its request's
    rows are dropped, not the batch's."""
    for value in served:
        if value is None or isinstance(value, Mapping) or hasattr(value, "model_dump"):
            continue
        length = len(value)
        if names is None or length != len(names):
            raise ValueError(f"{length} feature values for the names {list(names or [])}")


def _feature_columns(served: list[Any], names: Sequence[str] | None) -> dict[str, Any]:
    """The `feature.<name>` columns of a batch's rows (`served`: each row's model input, None
    for a row without one). Rows of the service's model input matrix (1-D numpy arrays as
    long as `names`, the served path) become one matrix, each column a pyarrow array
    (null where a row has none); anything else goes row by row (`_feature_mapping`)."""
    import numpy as np
    import pyarrow as pa

    present = [i for i, value in enumerate(served) if value is not None]
    if not present:
        return {}
    if names is not None and all(
            isinstance(served[i], np.ndarray) and served[i].shape == (len(names),)
            for i in present):
        matrix = np.full((len(served), len(names)), np.nan)
        matrix[present] = np.stack([served[i] for i in present]).astype(np.float64, copy=False)
        missing = np.ones(len(served), dtype=bool)
        missing[present] = False
        masked = missing if missing.any() else None
        return {f"feature.{name}": pa.array(matrix[:, j], mask=masked)
                for j, name in enumerate(names)}
    rows = [None if value is None else _feature_mapping(value, names) for value in served]
    columns = list(dict.fromkeys(name for row in rows if row is not None for name in row))
    return {f"feature.{name}": _array([None if row is None else row.get(name) for row in rows])
            for name in columns}


def _table(flat: list[dict[str, Any]], version: str, model_tag: str,
           features: Mapping[str, Any] | None = None) -> Any:
    """The log's table of a batch: `flat` (one dict per row, `_split_rows`) and its feature
    columns (`_feature_columns`)."""
    import pyarrow as pa

    names = list(dict.fromkeys(name for record in flat for name in record))
    columns = {
        "request_id": pa.array([r["request_id"] for r in flat], pa.string()),
        "ts": pa.array([r["ts"] for r in flat], pa.timestamp("us", tz="UTC")),
        "version": pa.array([version] * len(flat), pa.string()),
        "model_tag": pa.array([model_tag] * len(flat), pa.string()),
        "endpoint": pa.array([r["endpoint"] for r in flat], pa.string()),
        "row": pa.array([r["row"] for r in flat], pa.int32()),
        "output": pa.array([r["output"] for r in flat], pa.float64()),
    }
    for name in names:
        if name not in columns and not name.startswith("extra."):
            columns[name] = _array([r.get(name) for r in flat])
    columns.update(features or {})
    for name in names:
        if name not in columns:
            columns[name] = _array([r.get(name) for r in flat])
    return pa.table(columns)


class PredictionLog:
    """The prediction log of one served version (see the module's docstring)."""

    def __init__(
        self,
        folder: str | Path,
        version: str,
        model_tag: str,
        *,
        max_queue: int = 10_000,
        flush_rows: int = 2_000,
        flush_seconds: float = 2.0,
        retention_hours: float | None = 168,
        feature_names: Sequence[str] | None = None,
        on_drop: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        # names of a row's features given as a sequence (a row of the model input matrix)
        self.feature_names = None if feature_names is None else tuple(feature_names)
        # told the rows of each drop (the service's Prometheus counter); its errors are ignored
        self.on_drop = on_drop
        self.version = str(version)
        self.model_tag = str(model_tag)
        self.max_queue = int(max_queue)
        self.flush_rows = int(flush_rows)
        self.flush_seconds = float(flush_seconds)
        self.retention_hours = retention_hours
        self.clock = clock
        self._closed = False
        self._fresh_state()
        _LOGS.add(self)
        atexit.register(_close_at_exit, weakref.ref(self))

    def _fresh_state(self) -> None:
        """The per-process state (also after a fork: the parent's writer is not ours)."""
        # appended by record on any thread, taken by the writer (deque: thread-safe, lock-free)
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()  # set by flush and close: look at the queue now
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._index: sqlite3.Connection | None = None
        # requests written to parquet whose index rows a failed transaction left out: tried
        # again with the next batch, at the writer's next idle flush interval and at close
        self._unindexed: list[tuple[Any, ...]] = []
        self._seq = 0
        self._last_retention = -math.inf
        self._logged = self._dropped = self._files = self._write_errors = 0
        self._last_error: str | None = None

    # -- the request path

    def record(
        self,
        request_id: str,
        endpoint: str,
        rows: Sequence[Any],
        outputs: Sequence[Any],
        features: Sequence[Mapping[str, Any] | None] | None = None,
        extra: Mapping[str, Sequence[Any]] | None = None,
    ) -> bool:
        """Queue one answered request for the log; False when it was dropped (queue full,
        log closed). O(1), never blocks, never raises; the values are checked by the writer.
        `outputs` has one value (float, int or None) per row, `features` the model input of
        each row (a mapping, or a sequence named by `feature_names`; None for a row without
        one), `extra` a list of per-row values per name."""
        try:
            if self._closed:
                self._drop(rows)
                return False
            if self._thread is None:
                self._start()
            if len(self._queue) >= self.max_queue:
                self._drop(rows)
                return False
            self._queue.append(
                (self.clock(), request_id, endpoint, rows, outputs, features, extra))
            return True
        except Exception as exc:  # never the request's problem
            self._drop(rows, exc)
            return False

    def _drop(self, rows: Any, error: BaseException | None = None) -> None:
        try:
            count = len(rows)
        except Exception:
            count = 1
        with self._lock:
            self._dropped += count
            if error is not None:
                self._last_error = f"{type(error).__name__}: {error}"
        self._tell_drop(count)

    def _tell_drop(self, rows: int) -> None:
        if self.on_drop is not None and rows:
            try:
                self.on_drop(rows)
            except Exception:  # a metric must not fail a request or the writer
                pass

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._seq = time.time_ns() // 1000
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"prediction-log-{self.version}")
                thread.start()
                self._thread = thread

    # -- the writer

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                items, markers, stop = self._collect()
                if items:
                    self._write_batch(items)
                    self._retain_now_and_then()
                    self._write_stats()
                elif self._unindexed:
                    self._add_to_index([])
                    self._write_stats()
                for marker in markers:  # a flush waits for the retention pass too
                    marker.set()
            except Exception as exc:  # pragma: no cover - the steps above catch their own
                with self._lock:
                    self._last_error = f"writer: {type(exc).__name__}: {exc}"
        for _ in range(UNINDEXED_TRIES):  # at close: the index rows a lock kept out
            if not self._unindexed:
                break
            self._add_to_index([])
            if self._unindexed:
                time.sleep(0.2)
        leftover = 0
        while True:  # a record that raced close(): counted, not lost silently
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            if isinstance(item, threading.Event):
                item.set()
            elif item is not _STOP:
                leftover += _row_count(item)
        with self._lock:
            self._dropped += leftover
        if self._index is not None:
            self._index.close()
            self._index = None

    def _collect(self) -> tuple[list[Any], list[threading.Event], bool]:
        """The next batch: waits for a first item, then takes items until flush_rows rows,
        flush_seconds after the first, a flush marker or the stop item. Looks at the queue
        every POLL_SECONDS, or at once when flush or close wake it."""
        # with index rows to try again, not longer than a flush interval
        give_up = time.monotonic() + self.flush_seconds if self._unindexed else math.inf
        while not self._queue:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return [], [], False
            self._sleep(remaining)
        deadline = time.monotonic() + self.flush_seconds
        items: list[Any] = []
        rows = 0
        while True:
            while True:
                try:
                    item = self._queue.popleft()
                except IndexError:
                    break
                if item is _STOP:
                    return items, [], True
                if isinstance(item, threading.Event):  # all queued before it is taken
                    return items, [item], False
                items.append(item)
                rows += _row_count(item)
                if rows >= self.flush_rows:
                    return items, [], False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return items, [], False
            self._sleep(remaining)

    def _sleep(self, at_most: float) -> None:
        """Until the next look at the queue: POLL_SECONDS, less when `at_most` is less, or
        until flush or close wake the writer."""
        self._wake.wait(min(at_most, POLL_SECONDS))
        self._wake.clear()

    def _write_batch(self, items: list[Any]) -> None:
        """Write one batch: one file per hour, then its requests into the index. Counts
        and records every failure; raises nothing."""
        try:
            by_hour: dict[str, list[dict[str, Any]]] = {}
            served: dict[str, list[Any]] = {}
            index_rows: dict[str, list[tuple[Any, ...]]] = {}
            for item in items:
                try:
                    flat, features = _split_rows(item)
                    _check_features(features, self.feature_names)
                    ts = float(item[0])
                    hour = _hour(ts)
                except Exception as exc:
                    self._failed(_row_count(item), exc)
                    continue
                by_hour.setdefault(hour, []).extend(flat)
                served.setdefault(hour, []).extend(features)
                index_rows.setdefault(hour, []).append(
                    (str(item[1]), self.version, ts, str(item[2]), len(flat), hour))
            written: list[tuple[Any, ...]] = []
            for hour, flat in by_hour.items():
                try:
                    columns = _feature_columns(served[hour], self.feature_names)
                    self._write_table(hour, _table(flat, self.version, self.model_tag, columns))
                except Exception as exc:
                    self._failed(len(flat), exc)
                    continue
                with self._lock:
                    self._logged += len(flat)
                    self._files += 1
                written.extend(index_rows[hour])
            if written:
                self._add_to_index(written)
        except Exception as exc:  # a bug here must not end the writer
            self._failed(sum(_row_count(i) for i in items), exc)

    def _failed(self, rows: int, error: BaseException) -> None:
        with self._lock:
            self._dropped += rows
            self._write_errors += 1
            self._last_error = f"{type(error).__name__}: {error}"
        self._tell_drop(rows)

    def stats_file(self) -> Path:
        """Where this process's writer keeps its stats (status sums every writer's)."""
        return self.folder / STATS_DIR / f"{quote(self.version, safe='')}-{os.getpid()}.json"

    def _write_stats(self) -> None:
        try:
            path = self.stats_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(json.dumps({"version": self.version, **self.stats()},
                                            sort_keys=True))
            os.replace(temporary, path)
        except OSError:
            pass  # status then shows the last stats written

    def partition(self, hour: str) -> Path:
        """The folder of this version's partition for `hour` (YYYY-MM-DDTHH)."""
        return self.folder / f"version={quote(self.version, safe='')}" / f"hour={hour}"

    def _write_table(self, hour: str, table: Any) -> Path:
        """Write `table` as a new file of the hour's partition, atomically."""
        import pyarrow.parquet as pq

        folder = self.partition(hour)
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{os.getpid()}-{self._seq}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return folder / name

    def _add_to_index(self, rows: list[tuple[Any, ...]]) -> None:
        """Index the written requests, and those a failed try left out (another process
        held the index past its busy timeout, say): kept and tried again, never dropped
        while fewer than MAX_UNINDEXED wait."""
        pending = self._unindexed + rows
        try:
            if self._index is None:
                self._index = open_index(self.folder)
            with self._index:
                self._index.executemany(
                    "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?)", pending)
            self._unindexed = []
        except Exception as exc:
            self._unindexed = pending[-MAX_UNINDEXED:]
            with self._lock:
                self._write_errors += 1 if len(pending) <= MAX_UNINDEXED else 2
                self._last_error = f"index: {type(exc).__name__}: {exc}"
            if self._index is not None:
                self._index.close()
                self._index = None

    def _retain_now_and_then(self) -> None:
        if self.retention_hours is None:
            return
        now = time.monotonic()
        if now - self._last_retention < RETENTION_INTERVAL_S:
            return
        self._last_retention = now
        try:
            self.apply_retention()
        except Exception as exc:
            with self._lock:
                self._last_error = f"retention: {type(exc).__name__}: {exc}"

    def apply_retention(self, now: float | None = None) -> list[Path]:
        """Delete the hour partitions (of every version) that ended more than
        retention_hours before `now` (default: the clock), their index rows and the version
        folders left empty; returns the partitions deleted. Another worker deleting the
        same partitions at the same time is fine."""
        if self.retention_hours is None:
            return []
        now = self.clock() if now is None else now
        cutoff = _hour(now - float(self.retention_hours) * 3600)  # older hours have ended
        deleted = []
        for version_folder in self.folder.glob("version=*"):
            for hour_folder in version_folder.glob("hour=*"):
                hour = hour_folder.name[len("hour="):]
                if _HOUR.fullmatch(hour) and hour < cutoff:
                    shutil.rmtree(hour_folder, ignore_errors=True)
                    deleted.append(hour_folder)
            try:
                version_folder.rmdir()  # only when empty
            except OSError:
                pass
        index = open_index(self.folder)  # its own: this may run on any thread
        try:
            with index:
                index.execute("DELETE FROM requests WHERE hour < ?", (cutoff,))
        finally:
            index.close()
        return deleted

    # -- control

    def stats(self) -> dict[str, Any]:
        """queued (requests waiting), logged (rows written), dropped (rows not logged: full
        queue, closed log, failed writes), files, write_errors, last_error."""
        with self._lock:
            return {"queued": len(self._queue), "logged": self._logged,
                    "dropped": self._dropped, "files": self._files,
                    "write_errors": self._write_errors, "last_error": self._last_error}

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what was queued before this call is written (or counted as dropped);
        False when `timeout` passed first."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._queue
        deadline = time.monotonic() + timeout
        marker = threading.Event()
        self._queue.append(marker)
        self._wake.set()
        return marker.wait(max(deadline - time.monotonic(), 0.0))

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued and stop the writer; later records are dropped. False when
        the writer did not finish within `timeout`."""
        self._closed = True
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        deadline = time.monotonic() + timeout
        self._queue.append(_STOP)
        self._wake.set()
        thread.join(max(deadline - time.monotonic(), 0.0))
        return not thread.is_alive()


def _close_at_exit(reference: weakref.ref[PredictionLog]) -> None:
    log = reference()
    if log is not None:
        log.close(timeout=5.0)


def _after_fork_in_child() -> None:
    global _id_lock
    _id_lock = threading.Lock()
    for log in list(_LOGS):
        log._fresh_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- reading

def _epoch(value: datetime | str | float) -> float:
    """Unix seconds of a datetime (naive: UTC), an ISO string or a number."""
    import pandas as pd

    if isinstance(value, int | float):
        return float(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.timestamp())


def _unified_schema(schemas: Iterable[Any]) -> Any:
    """One schema for files whose columns differ: a column missing from a file is null
    there; types that do not promote to one another are read as strings."""
    import pyarrow as pa

    types: dict[str, list[Any]] = {}
    for schema in schemas:
        for field in schema:
            types.setdefault(field.name, []).append(field.type)
    fields = []
    for name, found in types.items():
        distinct = list(dict.fromkeys(found))
        try:
            unified = pa.unify_schemas([pa.schema([(name, t)]) for t in distinct],
                                       promote_options="permissive").field(name).type
        except (pa.ArrowException, TypeError):
            unified = pa.string()
        fields.append(pa.field(name, unified))
    return pa.schema(fields)


def _empty_log() -> Any:
    import pyarrow as pa

    schema = pa.schema([("request_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                        ("version", pa.string()), ("model_tag", pa.string()),
                        ("endpoint", pa.string()), ("row", pa.int32()),
                        ("output", pa.float64())])
    return schema.empty_table().to_pandas()


def read_log(
    folder: str | Path,
    versions: str | Iterable[str] | None = None,
    since: datetime | str | float | None = None,
    until: datetime | str | float | None = None,
) -> Any:
    """The log's rows as a pandas DataFrame, ordered by time, request id and row: of the
    given versions (all by default), with since <= ts < until (datetimes, naive ones in
    UTC, ISO strings or unix seconds). Partitions are pruned by their names first. An empty
    frame with the base columns when nothing matches."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    folder = Path(folder)
    paths = sorted(str(p) for p in folder.glob("version=*/hour=*/part-*.parquet"))
    if not paths:
        return _empty_log()
    partitioning = ds.partitioning(
        pa.schema([("version", pa.string()), ("hour", pa.string())]), flavor="hive")
    dataset = ds.dataset(paths, format="parquet", partitioning=partitioning,
                         partition_base_dir=str(folder))
    where = None
    rows = None
    if versions is not None:
        wanted = [versions] if isinstance(versions, str) else [str(v) for v in versions]
        where = ds.field("version").isin(wanted)
    timestamp = pa.timestamp("us", tz="UTC")
    for bound, is_since in ((since, True), (until, False)):
        if bound is None:
            continue
        seconds = _epoch(bound)
        hour = ds.field("hour") >= _hour(seconds) if is_since else \
            ds.field("hour") <= _hour(seconds)
        where = hour if where is None else where & hour
        stamp = pa.scalar(int(round(seconds * 1_000_000)), timestamp)
        row = ds.field("ts") >= stamp if is_since else ds.field("ts") < stamp
        rows = row if rows is None else rows & row
    fragments = list(dataset.get_fragments(filter=where)) if where is not None \
        else list(dataset.get_fragments())
    if not fragments:
        return _empty_log()
    schema = _unified_schema(f.physical_schema for f in fragments)
    if "version" not in schema.names:
        schema = schema.append(pa.field("version", pa.string()))
    table = ds.dataset([f.path for f in fragments], schema=schema, format="parquet") \
        .to_table(filter=rows)
    frame = table.to_pandas()
    if frame.empty:
        empty = _empty_log()
        return frame.astype(empty.dtypes.to_dict()) if set(empty) <= set(frame) else empty
    ordered = [c for c in LOG_COLUMNS if c in frame] + [c for c in frame if c not in LOG_COLUMNS]
    return frame[ordered].sort_values(["ts", "request_id", "row"]).reset_index(drop=True)
