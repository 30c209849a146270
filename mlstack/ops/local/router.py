"""A small local weighted router in front of the deployed service versions.

Run as `python -m mlstack.ops.local.router --port P --config FILE`. The config file holds
{"backends": [{"version": "v3", "url": "http://127.0.0.1:4101", "weight": 95}, ...]} and is
re-read when it changes, so deploy moves traffic by rewriting it (atomically). Requests are
spread by smooth weighted round-robin (deterministic, so a 5% canary gets 1 in 20 requests);
each response carries `X-Mlstack-Version`, so clients can measure every version on its own.
A backend that refuses the connection is skipped for another one with weight, so a version
going away during a swap does not fail requests. `GET /-/router` shows the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host"}


class BackendTable:
    def __init__(self, config: Path):
        self.config = config
        self.lock = threading.Lock()
        self.mtime_ns = -1
        self.backends: list[dict] = []
        self.current: dict[str, float] = {}

    def refresh(self) -> None:
        try:
            mtime = self.config.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self.mtime_ns:
            return
        with self.lock:
            try:
                data = json.loads(self.config.read_text())
            except (OSError, ValueError):
                return  # a half-written file: keep the last good table
            self.backends = [b for b in data.get("backends", []) if b.get("weight", 0) > 0]
            self.current = {b["version"]: 0.0 for b in self.backends}
            self.mtime_ns = mtime

    def order(self) -> list[dict]:
        """Backends to try for one request: the smooth-WRR pick first, then the others."""
        self.refresh()
        with self.lock:
            if not self.backends:
                return []
            total = sum(b["weight"] for b in self.backends)
            for b in self.backends:
                self.current[b["version"]] += b["weight"]
            best = max(self.backends, key=lambda b: self.current[b["version"]])
            self.current[best["version"]] -= total
            return [best] + [b for b in self.backends if b is not best]


class _NoDelayConnection(http.client.HTTPConnection):
    """Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm
    and delayed ACKs add ~40 ms to every proxied request."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Local(threading.local):
    def __init__(self):
        self.connections: dict[str, http.client.HTTPConnection] = {}


def make_handler(table: BackendTable):
    local = _Local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep the log for errors only
            pass

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _connection(self, url: str) -> http.client.HTTPConnection:
            conn = local.connections.get(url)
            if conn is None:
                parsed = urllib.parse.urlsplit(url)
                conn = _NoDelayConnection(parsed.hostname, parsed.port, timeout=60)
                local.connections[url] = conn
            return conn

        def _forward(self) -> None:
            if self.path == "/-/router":
                table.refresh()
                return self._reply(200, json.dumps({"backends": table.backends}).encode(),
                                   {"Content-Type": "application/json"})
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            candidates = table.order()
            if not candidates:
                return self._reply(503, b'{"error": "no backend"}',
                                   {"Content-Type": "application/json"})
            for backend in candidates:
                for attempt in range(2):  # a stale keep-alive connection gets one retry
                    conn = self._connection(backend["url"])
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                        payload = response.read()
                    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError,
                            http.client.RemoteDisconnected, http.client.CannotSendRequest,
                            OSError):
                        conn.close()
                        local.connections.pop(backend["url"], None)
                        if attempt == 0:
                            continue
                        break
                    out = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                    out["X-Mlstack-Version"] = backend["version"]
                    return self._reply(response.status, payload, out)
            return self._reply(502, b'{"error": "no backend answered"}',
                               {"Content-Type": "application/json"})

        def _reply(self, status: int, payload: bytes, headers: dict) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    return Handler


def write_table(config: Path, backends: list[dict]) -> None:
    """Atomically replace the router's table (the router picks it up on its next request)."""
    config.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.with_suffix(".tmp")
    tmp.write_text(json.dumps({"backends": backends}, indent=2, sort_keys=True))
    os.replace(tmp, config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(BackendTable(args.config)))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
