"""A small local weighted router in front of the deployed service versions.

Run as `python -m mlstack.ops.local.router --port P --config FILE`. The config file holds
{"backends": [{"version": "v3", "url": "http://127.0.0.1:4101", "weight": 95}, ...],
"limits": {...}} and is re-read when it changes, so deploy moves traffic by rewriting it
(atomically). Requests are spread by smooth weighted round-robin (deterministic, so a 5%
canary gets 1 in 20 requests); each response carries `X-Mlstack-Version`, so clients can
measure every version on its own. A backend that refuses the connection is skipped for
another one with weight, so a version going away during a swap does not fail requests.
`GET /-/router` shows the table, the limits and the admission counters.

Admission control keeps overload from building a backlog anywhere (LIMITS, each overridable
in the table's "limits"):
- at most `max_in_flight` requests are forwarded at once; up to `max_queue` more wait at most
  `queue_timeout_s` for a slot; any other request gets 503 with `Retry-After: 1` at once;
- at most `max_connections` client connections are served; one more gets that 503 and is
  closed; the listen backlog holds LISTEN_BACKLOG connections (not Python's default of 5);
- a backend that does not answer within `backend_timeout_s` gets its request answered 504;
- a request body above `max_body_bytes` (Content-Length or chunked) gets 413; chunked
  request bodies are reassembled and forwarded with a Content-Length;
- an idle or stalled client connection is closed after IDLE_TIMEOUT seconds.
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
              "trailers", "transfer-encoding", "upgrade", "content-length", "host", "expect"}
LIMITS = {
    "max_in_flight": 64,  # requests forwarded to the backends at once
    "max_queue": 64,  # requests waiting for a slot
    "queue_timeout_s": 0.5,  # the longest wait for a slot
    "backend_timeout_s": 10.0,  # connect, and each read of the backend's answer
    "max_body_bytes": 1 << 20,  # a request body (1 MiB)
    "max_connections": 1024,  # client connections served at once
}
LISTEN_BACKLOG = 1024
IDLE_TIMEOUT = 60.0
DRAIN_LIMIT = 16 << 20  # a too large body up to this size is read and dropped, so the
# client, still sending, gets its 413 rather than a reset connection
JSON = {"Content-Type": "application/json"}
SHED_HEADERS = {**JSON, "Retry-After": "1"}


class _TooLarge(Exception):
    pass


class _BadBody(Exception):
    pass


class BackendTable:
    def __init__(self, config: Path):
        self.config = config
        self.lock = threading.Lock()
        self.mtime_ns = -1
        self.backends: list[dict] = []
        self.current: dict[str, float] = {}
        self.limits: dict = dict(LIMITS)

    def refresh(self) -> None:
        try:
            mtime = self.config.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self.mtime_ns:
            return
        with self.lock:
            try:
                backends, limits = parse_table(self.config.read_text())
            except (OSError, ValueError):
                return  # a half-written or malformed file: keep the last good table
            self.backends = backends
            self.current = {b["version"]: 0.0 for b in self.backends}
            self.limits = limits
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


def parse_table(text: str) -> tuple[list[dict], dict]:
    """The backends with weight and the limits in a table file's text. ValueError for
    anything else: a cut-off file is not JSON, and JSON of another shape would otherwise
    fail every request (a backend without a url, a weight that is not a number)."""
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
    return ([b for b in backends if b.get("weight", 0) > 0],
            {**LIMITS, **{k: v for k, v in limits.items()
                          if k in LIMITS and isinstance(v, int | float)}})


class Admission:
    """A bounded number of requests in flight, and a bounded, short wait for a slot."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.in_flight = self.waiting = 0
        self.admitted = self.shed = 0

    def acquire(self, limits: dict) -> bool:
        with self.cond:
            if self.in_flight < limits["max_in_flight"]:
                self.in_flight += 1
                self.admitted += 1
                return True
            if self.waiting >= limits["max_queue"]:
                self.shed += 1
                return False
            self.waiting += 1
            try:
                got = self.cond.wait_for(lambda: self.in_flight < limits["max_in_flight"],
                                         timeout=limits["queue_timeout_s"])
            finally:
                self.waiting -= 1
            if not got:
                self.shed += 1
                return False
            self.in_flight += 1
            self.admitted += 1
            return True

    def release(self) -> None:
        with self.cond:
            self.in_flight -= 1
            self.cond.notify()

    def counters(self) -> dict:
        with self.cond:
            return {"in_flight": self.in_flight, "waiting": self.waiting,
                    "admitted": self.admitted, "shed": self.shed}


class _NoDelayConnection(http.client.HTTPConnection):
    """Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm
    and delayed ACKs add ~40 ms to every proxied request."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Local(threading.local):
    def __init__(self):
        self.connections: dict[str, http.client.HTTPConnection] = {}


class RouterServer(ThreadingHTTPServer):
    """A thread per client connection, at most `max_connections` of them: one more is
    answered 503 from the accepting thread and closed, so no backlog builds up."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, table: BackendTable):
        self.table = table
        self.admission = Admission()
        self.connections = 0
        self.refused_connections = 0
        self.count_lock = threading.Lock()
        super().__init__(address, make_handler(table, self))

    def process_request(self, request, client_address) -> None:
        self.table.refresh()
        with self.count_lock:
            full = self.connections >= self.table.limits["max_connections"]
            if full:
                self.refused_connections += 1
            else:
                self.connections += 1
        if full:
            payload = b'{"error": "overloaded: too many connections"}'
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                b"Content-Type: application/json\r\nConnection: close\r\n"
                                b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
                                + payload)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-request is not an error of the router's."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.count_lock:
                self.connections -= 1


def make_handler(table: BackendTable, server: RouterServer | None = None):
    local = _Local()
    admission = server.admission if server is not None else Admission()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_TIMEOUT

        def log_message(self, *args) -> None:  # keep the log for errors only
            pass

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _connection(self, url: str, timeout: float) -> http.client.HTTPConnection:
            conn = local.connections.get(url)
            if conn is None:
                parsed = urllib.parse.urlsplit(url)
                conn = _NoDelayConnection(parsed.hostname, parsed.port, timeout=timeout)
                local.connections[url] = conn
            elif conn.timeout != timeout:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            return conn

        def _drop(self, url: str) -> None:
            conn = local.connections.pop(url, None)
            if conn is not None:
                conn.close()

        def _read_body(self, limit: int) -> bytes | None:
            """The request body: by Content-Length, or chunked (reassembled), at most
            `limit` bytes."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked(limit)
            raw = self.headers.get("Content-Length")
            if raw is None:
                return None
            try:
                length = int(raw)
            except ValueError:
                raise _BadBody(f"Content-Length {raw!r} is not a number") from None
            if length < 0:
                raise _BadBody("negative Content-Length")
            if length > limit:
                if length <= DRAIN_LIMIT:
                    self._drain(length)
                raise _TooLarge(length)
            body = self.rfile.read(length) if length else b""
            if len(body) != length:
                raise _BadBody("the body ended before its Content-Length")
            return body

        def _drain(self, length: int) -> None:
            left = length
            while left > 0:
                got = self.rfile.read(min(left, 1 << 16))
                if not got:
                    return
                left -= len(got)
            self.drained = True

        def _read_chunked(self, limit: int) -> bytes:
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise _BadBody("a chunk size line is malformed or cut off")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadBody("a chunk size is not hexadecimal") from None
                if size < 0:
                    raise _BadBody("negative chunk size")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return b"".join(parts)
                total += size
                if total > limit:
                    raise _TooLarge(total)
                chunk = self.rfile.read(size)
                if len(chunk) != size or self.rfile.readline(8) not in (b"\r\n", b"\n"):
                    raise _BadBody("a chunk is cut off")
                parts.append(chunk)

        def _forward(self) -> None:
            if self.path == "/-/router":
                table.refresh()
                info = {"backends": table.backends, "limits": table.limits,
                        **admission.counters()}
                if server is not None:
                    info.update(connections=server.connections,
                                refused_connections=server.refused_connections)
                return self._reply(200, json.dumps(info).encode(), JSON)
            table.refresh()
            limits = table.limits
            self.drained = False
            try:
                body = self._read_body(int(limits["max_body_bytes"]))
            except _TooLarge:
                close = {} if self.drained else {"Connection": "close"}
                self.close_connection = not self.drained
                return self._reply(413, json.dumps({
                    "error": f"request body above {int(limits['max_body_bytes'])} bytes"
                }).encode(), {**JSON, **close})
            except _BadBody as exc:
                self.close_connection = True
                return self._reply(400, json.dumps({"error": str(exc)}).encode(),
                                   {**JSON, "Connection": "close"})
            if not admission.acquire(limits):
                return self._reply(503, b'{"error": "overloaded: try again shortly"}',
                                   SHED_HEADERS)
            try:
                self._send_to_backends(body, float(limits["backend_timeout_s"]))
            finally:
                admission.release()

        def _send_to_backends(self, body: bytes | None, timeout: float) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            candidates = table.order()
            if not candidates:
                return self._reply(503, b'{"error": "no backend"}', SHED_HEADERS)
            for backend in candidates:
                url = backend["url"]
                for attempt in range(2):  # a stale keep-alive connection gets one retry
                    conn = self._connection(url, timeout)
                    reused = conn.sock is not None
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                        payload = response.read()
                    except TimeoutError:
                        self._drop(url)
                        return self._reply(504, json.dumps({
                            "error": f"{backend['version']} did not answer within {timeout:g} s"
                        }).encode(), {**JSON, "X-Mlstack-Version": backend["version"]})
                    except ConnectionRefusedError:
                        self._drop(url)
                        break  # not listening: the next backend
                    except (ConnectionResetError, BrokenPipeError, http.client.HTTPException,
                            OSError):
                        self._drop(url)
                        if attempt == 0 and reused:
                            continue
                        break
                    out = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                    out["X-Mlstack-Version"] = backend["version"]
                    if response.will_close:
                        self._drop(url)
                    return self._reply(response.status, payload, out)
            return self._reply(502, b'{"error": "no backend answered"}', JSON)

        def _reply(self, status: int, payload: bytes, headers: dict) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward

    return Handler


def write_table(config: Path, backends: list[dict], limits: dict | None = None) -> None:
    """Atomically replace the router's table (the router picks it up on its next request)."""
    config.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.with_suffix(".tmp")
    tmp.write_text(json.dumps({"backends": backends, "limits": limits or {}}, indent=2,
                              sort_keys=True))
    os.replace(tmp, config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    server = RouterServer((args.host, args.port), BackendTable(args.config))
    server.serve_forever()


if __name__ == "__main__":
    main()
