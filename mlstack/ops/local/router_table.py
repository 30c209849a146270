"""The router's table file (mlstack.ops.local.router): the backends with their weights, the
limits, and the optional shadow and sticky entries; written atomically by deploy, re-read by
the router when it changes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import NamedTuple

from mlstack.ops.local.traffic_split import parse_shadow, parse_sticky

LIMITS = {
    "max_in_flight": 64,  # requests forwarded to the backends at once
    "max_queue": 64,  # requests waiting for a slot
    "queue_timeout_s": 0.5,  # the longest wait for a slot
    "backend_timeout_s": 10.0,  # connect, and each read of the backend's answer
    "max_body_bytes": 1 << 20,  # a request body (1 MiB)
    "max_connections": 1024,  # client connections served at once
    # from one client address: a quarter, so one client cannot take every slot (all local
    # clients share 127.0.0.1: they share this cap, and deadlines free slow clients' slots)
    "max_connections_per_address": 256,
    "idle_timeout_s": 60.0,  # a connection with no request started
    "header_timeout_s": 10.0,  # a request's line and headers, from its first byte
    "body_timeout_s": 30.0,  # a request's body, from its headers
}


class BackendTable:
    def __init__(self, config: Path):
        self.config = config
        self.lock = threading.Lock()
        self.mtime_ns = -1
        self.backends: list[dict] = []
        self.current: dict[str, float] = {}
        self.limits: dict = dict(LIMITS)
        self.shadow: dict | None = None  # mlstack.ops.local.traffic_split
        self.sticky: dict | None = None
        self.on_change: list = []  # called after a new table is read

    def refresh(self) -> None:
        try:
            mtime = self.config.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self.mtime_ns:
            return
        with self.lock:
            try:
                parsed = parse_table(self.config.read_text())
            except (OSError, ValueError):
                return  # a half-written or malformed file: keep the last good table
            self.backends = parsed.backends
            self.current = {b["version"]: 0.0 for b in self.backends}
            self.limits, self.shadow, self.sticky = parsed.limits, parsed.shadow, parsed.sticky
            self.mtime_ns = mtime
        for listener in self.on_change:
            listener()

    def order(self, refresh: bool = True) -> list[dict]:
        """Backends to try for one request: the smooth-WRR pick first, then the others."""
        if refresh:
            self.refresh()
        with self.lock:
            if not self.backends:
                return []
            if len(self.backends) == 1:
                return list(self.backends)  # the one backend: the round-robin picks it
            total = sum(b["weight"] for b in self.backends)
            for b in self.backends:
                self.current[b["version"]] += b["weight"]
            best = max(self.backends, key=lambda b: self.current[b["version"]])
            self.current[best["version"]] -= total
            return [best] + [b for b in self.backends if b is not best]


class ParsedTable(NamedTuple):
    backends: list[dict]  # those with weight
    limits: dict  # LIMITS, with the table's overrides
    shadow: dict | None  # {"version", "url", "tolerance"}: mirrored, serves no client
    sticky: dict | None  # {"experiment", "key"}: sticky A/B over the backends' weights


def parse_table(text: str) -> ParsedTable:
    """The backends with weight, the limits, the shadow and the sticky split in a table
    file's text. ValueError for anything else: a cut-off file is not JSON, and JSON of another
    shape would otherwise fail every request (a backend without a url, a weight that is not a
    number, a shadow without a url)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the table is not an object")
    backends, limits = data.get("backends", []), data.get("limits") or {}
    if not isinstance(backends, list) or not isinstance(limits, dict):
        raise ValueError("backends is not a list, or limits not an object")
    for b in backends:
        if not (isinstance(b, dict) and isinstance(b.get("weight", 0), int | float)
                and isinstance(b.get("version"), str) and isinstance(b.get("url"), str)):
            raise ValueError(f"a backend is malformed: {b!r}")
    return ParsedTable([b for b in backends if b.get("weight", 0) > 0],
                       {**LIMITS, **{k: v for k, v in limits.items()
                                     if k in LIMITS and isinstance(v, int | float)}},
                       parse_shadow(data.get("shadow")), parse_sticky(data.get("sticky")))


def write_table(config: Path, backends: list[dict], limits: dict | None = None, *,
                shadow: dict | None = None, sticky: dict | None = None) -> None:
    """Atomically replace the router's table (the router picks it up on its next request);
    `shadow` and `sticky` are written only when given (mlstack.ops.local.traffic_split)."""
    config.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.with_suffix(".tmp")
    table = {"backends": backends, "limits": limits or {},
             **({"shadow": shadow} if shadow else {}), **({"sticky": sticky} if sticky else {})}
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True))
    os.replace(tmp, config)
