"""Feedback on logged predictions: an outcome per request id, kept beside the prediction log.

    store = FeedbackStore(log_folder)               # folder/feedback.db (SQLite, WAL)
    result = store.record(request_id, outcome)      # FeedbackResult; result.http_status
    read_feedback(log_folder)  -> DataFrame(request_id, outcome, received_at)
    joined(log_folder, since)  -> the log's rows with their outcome (see `joined`)

`record`'s statuses, and the HTTP status the service answers with:

    stored     201  the first outcome for this request id
    duplicate  200  the same outcome for the same id again (idempotent: a client's retry)
    conflict   409  another outcome for an id that has one; the first one is kept
    unknown    404  the id is ours but no logged request has it
    invalid    422  the id is not one of ours (see prediction_log.request_time), or the
                    outcome is not a finite number, a bool or a label (a non-empty string of
                    at most 256 characters)

`parse_body` reads a POST body ({"request_id": ..., "outcome": ...}, at most `max_bytes`)
before that: 'too_large' (413) and 'malformed' (400: not a JSON object with those two keys).
Numbers are stored as float64 (1 and 1.0 are the same outcome; True is not 1).

A young id is not checked against the index: its answer may have been given a moment ago
by a worker whose log has not reached the index yet (every worker flushes at most
`flush_seconds` after a request, then writes). So when the id's own time (UUIDv7) is less
than `grace_seconds` in the past (default 2 x the log's default flush_seconds + 1 s; at most
CLOCK_SKEW_SECONDS in the future), an outcome for an id the index does not hold yet is
stored at once, never waited for: a client sending its outcome right after the answer gets
201 within the service's deadline (waiting out the flush took longer than the service's 1 s
timeout: a 504). An outcome whose id never reaches the log is kept but never joined (`joined`
starts from the log). An older id the index does not hold is 'unknown'. The HTTP layer should
call `record` off its event loop (a thread): SQLite may wait on a writer's lock.

Each thread uses its own SQLite connection (opened on first use, and again after a fork);
an outcome is stored in one INSERT, so concurrent feedback for the same id cannot store two.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlstack.runtime.prediction_log import INDEX_FILE, open_index, read_log, request_time

__all__ = ["FEEDBACK_FILE", "FeedbackResult", "FeedbackStore", "HTTP_STATUS", "joined",
           "outcomes_by_version", "parse_body", "read_feedback"]

FEEDBACK_FILE = "feedback.db"
# The longest label outcome (characters).
MAX_LABEL = 256
# The largest POST /feedback body parse_body takes (bytes).
MAX_BODY_BYTES = 4096
# The prediction log's default flush interval (PredictionLog's flush_seconds).
LOG_FLUSH_SECONDS = 2.0
DEFAULT_GRACE_SECONDS = 2 * LOG_FLUSH_SECONDS + 1
# How far in the future a young id's time may be (another process's clock).
CLOCK_SKEW_SECONDS = 1.0
BUSY_TIMEOUT_MS = 10_000
HTTP_STATUS = {"stored": 201, "duplicate": 200, "conflict": 409, "unknown": 404,
               "invalid": 422, "malformed": 400, "too_large": 413}


@dataclass(frozen=True)
class FeedbackResult:
    """What became of one feedback: its status (a key of HTTP_STATUS), the request id, the
    outcome the store holds for it (the first one, on a conflict; None when nothing is
    stored) and a message for the answer."""

    status: str
    request_id: Any
    outcome: Any = None
    message: str = ""

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.status]


def _outcome_text(outcome: Any) -> str | None:
    """The stored JSON of a valid outcome; None for an invalid one."""
    if isinstance(outcome, bool):
        return json.dumps(outcome)
    if isinstance(outcome, int | float):
        try:
            value = float(outcome)
        except OverflowError:
            return None
        return json.dumps(value) if math.isfinite(value) else None
    if isinstance(outcome, str) and 0 < len(outcome) <= MAX_LABEL:
        return json.dumps(outcome)
    return None


def _received_at(at: datetime | float | None) -> float:
    """Unix seconds of `at`: now when None, a naive datetime taken as UTC."""
    if at is None:
        return time.time()
    if isinstance(at, datetime):
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return float(at)


def parse_body(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> tuple[Any, Any] | FeedbackResult:
    """(request_id, outcome) of a POST /feedback body, or a FeedbackResult: 'too_large'
    past max_bytes, 'malformed' for anything but a JSON object with exactly those keys.
    The values themselves are checked by FeedbackStore.record."""
    if len(body) > max_bytes:
        return FeedbackResult("too_large", None,
                              message=f"feedback body over {max_bytes} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return FeedbackResult("malformed", None, message="the body is not JSON")
    if not isinstance(data, dict) or set(data) != {"request_id", "outcome"}:
        return FeedbackResult("malformed", None,
                              message='the body is {"request_id": ..., "outcome": ...}')
    return data["request_id"], data["outcome"]


class FeedbackStore:
    """Outcomes by request id in `folder`/feedback.db; `folder` is the prediction log's."""

    def __init__(self, folder: str | Path, *,
                 grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.folder = Path(folder)
        self.grace_seconds = float(grace_seconds)
        self._local = threading.local()

    def _connection(self, name: str) -> sqlite3.Connection:
        """This thread's connection to the feedback store or the log's index."""
        key = (name, os.getpid())
        connections: dict[tuple[str, int], sqlite3.Connection] | None = getattr(
            self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        if key not in connections:
            connections[key] = self._open_feedback() if name == FEEDBACK_FILE \
                else open_index(self.folder)
        return connections[key]

    def _open_feedback(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.folder / FEEDBACK_FILE,
                                     timeout=BUSY_TIMEOUT_MS / 1000)
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        with connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS feedback (request_id TEXT PRIMARY KEY, "
                "outcome TEXT NOT NULL, received_at REAL NOT NULL)")
        return connection

    def _logged(self, request_id: str) -> bool:
        index = self._connection(INDEX_FILE)
        return index.execute("SELECT 1 FROM requests WHERE request_id = ?",
                             (request_id,)).fetchone() is not None

    def _young(self, issued: float) -> bool:
        """Whether an id of this time may still be on its way into the index."""
        return -CLOCK_SKEW_SECONDS <= time.time() - issued < self.grace_seconds

    def record(self, request_id: Any, outcome: Any,
               at: datetime | float | None = None) -> FeedbackResult:
        """Store `outcome` for `request_id` (see the module's docstring for the statuses);
        `at` is when it was received (default now; a naive datetime is UTC)."""
        issued = request_time(request_id)
        if issued is None:
            return FeedbackResult("invalid", request_id,
                                  message="request_id is not a request id of this service")
        text = _outcome_text(outcome)
        if text is None:
            return FeedbackResult(
                "invalid", request_id,
                message=f"outcome is a finite number, a bool or a label of 1 to {MAX_LABEL} "
                        "characters")
        existing = self._stored(request_id)
        if existing is None and not self._young(issued) and not self._logged(request_id):
            return FeedbackResult("unknown", request_id,
                                  message="no logged prediction has this request_id")
        if existing is None:
            received = _received_at(at)
            feedback = self._connection(FEEDBACK_FILE)
            with feedback:
                inserted = feedback.execute(
                    "INSERT INTO feedback VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (request_id, text, received)).rowcount
            if inserted == 1:
                return FeedbackResult("stored", request_id, json.loads(text))
            existing = self._stored(request_id)  # another thread stored one first
        assert existing is not None
        if existing == text:
            return FeedbackResult("duplicate", request_id, json.loads(existing))
        return FeedbackResult("conflict", request_id, json.loads(existing),
                              message="this request_id already has another outcome")

    def _stored(self, request_id: str) -> str | None:
        row = self._connection(FEEDBACK_FILE).execute(
            "SELECT outcome FROM feedback WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close this thread's connections."""
        connections = getattr(self._local, "connections", None) or {}
        self._local.connections = {}
        for (_name, pid), connection in connections.items():
            if pid == os.getpid():
                connection.close()


def read_feedback(folder: str | Path) -> Any:
    """Every stored outcome: request_id, outcome (bool, float or str), received_at (UTC)."""
    import pandas as pd

    path = Path(folder) / FEEDBACK_FILE
    rows: list[tuple[Any, ...]] = []
    if path.is_file():
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            rows = connection.execute(
                "SELECT request_id, outcome, received_at FROM feedback "
                "ORDER BY received_at, request_id").fetchall()
        except sqlite3.OperationalError:  # created, no table yet
            rows = []
        finally:
            connection.close()
    return pd.DataFrame({
        "request_id": pd.Series([r[0] for r in rows], dtype=object),
        "outcome": pd.Series([json.loads(r[1]) for r in rows], dtype=object),
        "received_at": pd.to_datetime([r[2] for r in rows], unit="s", utc=True),
    })


def joined(folder: str | Path, since: datetime | str | float | None = None) -> Any:
    """The log's rows (read_log, from `since`) with `outcome` and `feedback_at` added by a
    left join on request_id. Feedback is per request, so a request's outcome goes on its
    row 0 only (for /rank: the first candidate as the request listed them, not the best
    ranked one); its other rows, and requests without feedback, have None / NaT. So summing
    or counting outcomes over rows counts each request once."""
    import pandas as pd

    log = read_log(folder, since=since)
    feedback = read_feedback(folder).rename(columns={"received_at": "feedback_at"})
    out = log.merge(feedback, on="request_id", how="left")
    later = out["row"] != 0
    outcome = out["outcome"].astype(object)
    out["outcome"] = outcome.where(outcome.notna() & ~later, None)
    out["feedback_at"] = out["feedback_at"].where(~later, pd.NaT)
    return out


def outcomes_by_version(folder: str | Path, since: float | None = None
                        ) -> list[tuple[str, Any]]:
    """(version, outcome) of each stored outcome whose request the log's index holds, for
    requests answered at or after `since` (unix seconds), oldest first: what an A/B readout
    counts, one per request, read from the two SQLite files alone (no parquet is read, so a
    look every few seconds stays cheap however long the experiment runs). [] when either
    file is missing."""
    folder = Path(folder)
    if not (folder / FEEDBACK_FILE).is_file() or not (folder / INDEX_FILE).is_file():
        return []
    connection = sqlite3.connect(folder / INDEX_FILE, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("ATTACH DATABASE ? AS answers", (str(folder / FEEDBACK_FILE),))
        rows = connection.execute(
            "SELECT r.version, f.outcome FROM answers.feedback AS f "
            "JOIN requests AS r ON r.request_id = f.request_id "
            "WHERE r.ts >= ? ORDER BY r.ts, r.request_id",
            (float(since) if since is not None else float("-inf"),)).fetchall()
    except sqlite3.OperationalError:  # created, no table yet
        rows = []
    finally:
        connection.close()
    return [(str(version), json.loads(outcome)) for version, outcome in rows]
