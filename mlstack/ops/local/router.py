"""A small local weighted router in front of the deployed service versions.

Run as `python -m mlstack.ops.local.router --port P --config FILE`. The config file holds
{"backends": [{"version": "v3", "url": "http://127.0.0.1:4101", "weight": 95}, ...],
"limits": {...}} and is re-read when it changes, so deploy moves traffic by rewriting it
(atomically). Requests are spread by smooth weighted round-robin (deterministic, so a 5%
canary gets 1 in 20 requests); each response carries `X-Mlstack-Version`, so clients can
measure every version on its own. A backend that refuses the connection is skipped for
another one with weight, so a version going away during a swap does not fail requests.
`GET /-/router` shows the table, the limits and the admission counters; `GET /metrics` counts
the answers clients got, by status code and by who answered (a version, or the router
itself), in Prometheus's text format (the local Prometheus scrapes it: mlstack.ops.local.alerting).
The table's optional "sticky" entry sends a keyed request to its sticky A/B arm, and its
"shadow" entry mirrors answered requests to a version that serves no client and compares the
answers (mlstack.ops.local.traffic_split; their counters are in `GET /-/router`).

The router stays inside the service's OpenAPI contract (mlstack.runtime.http_contract):
every method is forwarded (TRACE too: the service answers 405 with Allow, not the router
501), the backend's answer and headers (Retry-After, Allow, /docs.json) pass unchanged, and
what the router answers itself is a status the contract documents.

Admission control keeps overload from building a backlog anywhere (LIMITS, each overridable
in the table's "limits"):
- at most `max_in_flight` requests are forwarded at once; up to `max_queue` more wait at most
  `queue_timeout_s` for a slot; any other request gets 503 with `Retry-After: 1` at once;
- at most `max_connections` client connections are served, at most
  `max_connections_per_address` of them from one client address; one more gets that 503
  and is closed; the listen backlog holds LISTEN_BACKLOG connections (not Python's default
  of 5);
- a backend that does not answer within `backend_timeout_s` gets its request answered 504;
- a request body above `max_body_bytes` (Content-Length or chunked) gets 413; chunked
  request bodies are reassembled and forwarded with a Content-Length.

Slow clients cannot hold a connection for long (deadlines for the whole read, not for each
read: a client sending one byte a second would otherwise never time out): a request's line
and headers must arrive within `header_timeout_s` of its first byte, its body within
`body_timeout_s` of its headers (else 408 and the connection is closed); a connection with
no request started is closed after `idle_timeout_s`. A request the client cut off (its
headers or body end early) is answered 400 and never forwarded.

A backend that refused a connection, or left a request unanswered past the backend timeout
and does not answer its /readyz either (BentoML with every worker dead accepts connections
and answers nothing), is down: it gets no requests until a background probe of its /readyz
gets an answer or a new table is written (the control plane routes only versions it saw
ready), and while every routed backend is down a request gets 503 with Retry-After
at once instead of waiting the backend timeout (BackendHealth).

Every answer the router words itself (400, 408, 413, 503, 504) has the service's error
shape, `{"error": sentence, "detail": [{"loc": [...], "msg": ..., "type": ...}]}` as JSON,
and every 503, the backend's too, carries Retry-After. No version answering (each refused
the connection or hung up) is a 503 too, not a 502 the contract does not document: for the
client it is the same, nothing serves for now, retry.
"""

from __future__ import annotations

import argparse
import email.parser
import http.client
import io
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

from mlstack.ops.local.traffic_split import TrafficSplit, parse_shadow, parse_sticky

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host", "expect"}
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
LISTEN_BACKLOG = 1024
PROBE_EVERY_S = 0.5  # a down backend's /readyz is asked this often
PROBE_TIMEOUT_S = 1.0  # and must answer within this
STALLED_AFTER_S = 1.0  # a connection this long without a whole request head is stalled
DRAIN_LIMIT = 16 << 20  # a too large body up to this size is read and dropped, so the
# client, still sending, gets its 413 rather than a reset connection
JSON = {"Content-Type": "application/json"}
RETRY_AFTER = {"Retry-After": "1"}
SHED_HEADERS = {**JSON, **RETRY_AFTER}
CLOSE = {**JSON, "Connection": "close"}
SERVER = "mlstack-router"
# what the router can forward as HTTP/1.1: a method that is a token (RFC 9110 5.6.2) and a
# request target of visible ASCII (http.client refuses anything else)
METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
TARGET = re.compile(r"[\x21-\x7e]+")
# the router's own pages and the probes are not answers to clients (the generated rules leave
# the probes out of the service's counters too)
NOT_COUNTED = frozenset({"/metrics", "/-/router", "/healthz", "/livez", "/readyz"})
METRICS_TEXT = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


def error_body(sentence: str, kind: str, loc: tuple = ()) -> bytes:
    """An answer the router words itself, in the service's error shape (one detail item)."""
    return json.dumps({"error": sentence,
                       "detail": [{"loc": list(loc), "msg": sentence, "type": kind}]}).encode()


def _refusal(status: int, reason: str, sentence: str, kind: str) -> bytes:
    """A whole answer sent from the accepting thread, before any request is read."""
    payload = error_body(sentence, kind)
    return (f"HTTP/1.1 {status} {reason}\r\nServer: {SERVER}\r\nRetry-After: 1\r\n"
            f"Content-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


class _DeadlineReader(io.RawIOBase):
    """A client socket read against a deadline for a whole phase, not for each read. Before
    a request's first byte the idle deadline holds; the first byte sets the header deadline
    (`head_s` from then). `expired` names the phase whose deadline passed; `eof` says the
    client closed its side."""

    expired: str | None

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.began = time.monotonic()
        self.deadline = self.began + LIMITS["idle_timeout_s"]
        self.phase, self.head_s, self.expired, self.eof = "idle", 0.0, None, False
        self.heads = 0  # request heads read whole on this connection
        self.evicted = False

    def stalled(self, now: float) -> bool:
        """Still reading a request head, or never sent one, for STALLED_AFTER_S or more: a
        slow client's connection (a real client's head arrives at once; a client that keeps
        an idle connection for its next request has sent one before)."""
        return (not self.evicted and now - self.began >= STALLED_AFTER_S
                and (self.phase == "head" or (self.phase == "idle" and not self.heads)))

    def evict(self) -> None:
        """End the connection: its thread reads the end of file and closes it."""
        self.evicted = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def readable(self) -> bool:
        return True

    def expect(self, phase: str, seconds: float, head_s: float = 0.0) -> None:
        if phase == "body":
            self.heads += 1
        self.phase, self.head_s = phase, head_s
        self.began = time.monotonic()
        self.deadline = self.began + seconds
        self.expired, self.eof = None, False

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = self.phase
            raise TimeoutError(f"the {self.phase} deadline passed")
        self.sock.settimeout(left)
        try:
            got = self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = self.phase
            raise
        if got == 0:
            self.eof = True
        elif self.phase == "idle":  # a request began: its head has head_s from now
            self.phase = "head"
            if self.heads:  # a kept-alive connection's next request: stalled from now on
                self.began = time.monotonic()
            self.deadline = min(self.deadline, time.monotonic() + self.head_s)
        return got


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


class Answers:
    """Answers sent to clients, counted by (status code, who answered: a version or
    'router'), for GET /metrics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}

    def count(self, status: int, answered_by: str) -> None:
        with self.lock:
            key = (str(status), answered_by)
            self.counts[key] = self.counts.get(key, 0) + 1

    def render(self, refused_connections: int = 0) -> bytes:
        """Prometheus's text format; a connection refused at a cap got the router's 503."""
        with self.lock:
            counts = dict(self.counts)
        if refused_connections:
            key = ("503", "router")
            counts[key] = counts.get(key, 0) + refused_connections
        lines = ["# HELP mlstack_router_requests_total Requests answered to clients, by status "
                 "code and by who answered (a version, or the router itself).",
                 "# TYPE mlstack_router_requests_total counter"]
        lines += [f'mlstack_router_requests_total{{code="{code}",answered_by={json.dumps(by)}}}'
                  f" {n}" for (code, by), n in sorted(counts.items())]
        return ("\n".join(lines) + "\n").encode()


class BackendHealth:
    """Backends that are down: one that refused a connection, or that left a request
    unanswered past the backend timeout and then did not answer its /readyz either (BentoML
    with every worker dead accepts connections and answers nothing). The router sends a down
    backend nothing, and while every routed backend is down a request gets 503 with
    Retry-After at once instead of waiting the backend timeout. A background thread asks each
    down backend's /readyz every PROBE_EVERY_S; any answer but 503 brings it back. A new
    table forgets them all: the control plane writes one only after the versions in it were
    seen ready (a restarted version is routed at once, not after the next probe)."""

    def __init__(self, table: BackendTable) -> None:
        self.table = table
        self.lock = threading.Lock()
        self.down: dict[str, str] = {}  # url -> why
        self.prober: threading.Thread | None = None
        table.on_change.append(self.forget)

    def forget(self) -> None:
        with self.lock:
            self.down.clear()

    def is_down(self, url: str) -> bool:
        return url in self.down

    def mark_down(self, url: str, why: str) -> None:
        with self.lock:
            self.down[url] = why
            if self.prober is None:
                self.prober = threading.Thread(target=self._probe_forever, daemon=True)
                self.prober.start()

    def check(self, url: str, why: str) -> None:
        """After a request timed out: down only when its /readyz does not answer either (a
        slow request is not a dead backend)."""
        if not _answers(url):
            self.mark_down(url, why)

    def by_version(self) -> dict[str, str]:
        """{version: why} of the routed backends that are down (for GET /-/router)."""
        with self.lock:
            return {b["version"]: self.down[b["url"]] for b in self.table.backends
                    if b["url"] in self.down}

    def _probe_forever(self) -> None:
        while True:
            time.sleep(PROBE_EVERY_S)
            routed = {b["url"] for b in self.table.backends}
            with self.lock:
                for url in [u for u in self.down if u not in routed]:
                    del self.down[url]  # no longer routed: nothing to probe
                urls = list(self.down)
            for url in urls:
                if _answers(url):
                    with self.lock:
                        self.down.pop(url, None)


def _answers(url: str) -> bool:
    """The backend answers GET /readyz within PROBE_TIMEOUT_S with anything but 503 (a
    service without /readyz answers 404: it is up)."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname is not None  # a backend's url: http://host:port
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status != 503
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# one header line as nearly every client and backend sends it: a token name, a colon, a value
# on the same line (no obs-fold continuation, no empty name, no bare CR)
_PLAIN_HEADER = re.compile(rb"[!-9;-~]+:[^\r\n]*\r?\n")


def parse_headers(fp, _class=http.client.HTTPMessage):
    """http.client.parse_headers with the same answer, without the email package's feed
    parser for plain header lines (it was 40% of the router's CPU: once for each request's
    head, once for each backend answer's). Anything unusual (a folded line, a line without a
    name) goes to the email parser, as before."""
    lines = http.client._read_headers(fp)
    if all(_PLAIN_HEADER.fullmatch(line) for line in lines[:-1]):
        msg = _class()
        for line in lines[:-1]:
            name, value = line.decode("iso-8859-1").split(":", 1)
            msg.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
        return msg
    return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def use_fast_header_parser() -> None:
    """The router process parses request and answer heads with parse_headers (http.server
    and http.client look the function up in http.client at each call)."""
    http.client.parse_headers = parse_headers


class _NoDelayConnection(http.client.HTTPConnection):
    """Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm
    and delayed ACKs add ~40 ms to every proxied request."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Local(threading.local):
    def __init__(self) -> None:
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
        self.by_address: dict[str, int] = {}
        self.readers: dict[str, set[_DeadlineReader]] = {}  # the connections, by address
        self.evicted_connections = 0
        self.count_lock = threading.Lock()
        super().__init__(address, make_handler(table, self))

    def process_request(self, request, client_address) -> None:
        self.table.refresh()
        limits, host = self.table.limits, client_address[0]
        full: str | None  # why the connection is refused (None: it is served)
        with self.count_lock:
            if self.by_address.get(host, 0) >= limits["max_connections_per_address"]:
                full = f"overloaded: too many connections from {host}; retry after 1 s"
                if self._evict_stalled(host):
                    full = None
            elif self.connections >= limits["max_connections"]:
                full = "overloaded: too many connections; retry after 1 s"
                if self._evict_stalled(max(self.by_address, key=self.by_address.__getitem__)):
                    full = None
            else:
                full = None
            if full:
                self.refused_connections += 1
            else:
                self.connections += 1
                self.by_address[host] = self.by_address.get(host, 0) + 1
        if full:
            try:
                request.settimeout(1.0)
                request.sendall(_refusal(503, "Service Unavailable", full, "overloaded"))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _evict_stalled(self, host: str) -> bool:
        """Make room for a new connection: end the longest stalled connection of `host`
        (under count_lock). As nginx frees idle connections when it runs out: a slow client
        cannot keep a real one out, even from the same address (all local clients share
        127.0.0.1). The ended connection counts until its thread is gone, briefly."""
        now = time.monotonic()
        stalled = [r for r in self.readers.get(host, ()) if r.stalled(now)]
        if not stalled:
            return False
        min(stalled, key=lambda r: r.began).evict()
        self.evicted_connections += 1
        return True

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
                host = client_address[0]
                self.by_address[host] -= 1
                if not self.by_address[host]:
                    del self.by_address[host]


def make_handler(table: BackendTable, server: RouterServer | None = None):
    local = _Local()
    admission = server.admission if server is not None else Admission()
    health = BackendHealth(table)
    answers = Answers()
    traffic = TrafficSplit(table)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = SERVER
        _headers_buffer: list[bytes]  # BaseHTTPRequestHandler's own (typeshed omits it)

        def log_message(self, *args) -> None:  # keep the log for errors only
            pass

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.reader = _DeadlineReader(self.connection)
            self.rfile = io.BufferedReader(self.reader)
            if server is not None:
                with server.count_lock:
                    server.readers.setdefault(self.client_address[0], set()).add(self.reader)

        def finish(self) -> None:
            if server is not None:
                with server.count_lock:
                    readers = server.readers.get(self.client_address[0], set())
                    readers.discard(self.reader)
                    if not readers:
                        server.readers.pop(self.client_address[0], None)
            super().finish()

        def handle_one_request(self) -> None:
            limits = table.limits
            self.reader.expect("idle", float(limits["idle_timeout_s"]),
                               float(limits["header_timeout_s"]))
            super().handle_one_request()  # a read past its deadline closes the connection
            if self.reader.expired == "head":
                self._timed_out("headers")

        def _timed_out(self, part: str) -> None:
            """408 for a request whose headers or body did not arrive in time (best effort:
            the client may not read it), and the connection closed."""
            self.close_connection = True
            seconds = table.limits[f"{'header' if part == 'headers' else part}_timeout_s"]
            sentence = f"the request's {part} did not arrive within {seconds:g} s"
            try:
                self.request_version = "HTTP/1.1"
                self._reply(408, error_body(sentence, "request_timeout", (part,)), CLOSE,
                            write_timeout=1.0)
            except OSError:
                pass

        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            if self.request_version == "HTTP/0.9":  # a status line is always sent
                self.send_error(400, "an HTTP/1.x request line is expected "
                                     f"('METHOD /path HTTP/1.1'), got {self.requestline!r}")
                return False
            if self.reader.eof:  # the headers ended without their blank line
                self.send_error(400, "the request's headers were cut off", loc=("headers",))
                return False
            if not METHOD.fullmatch(self.command) or not TARGET.fullmatch(self.path):
                self.send_error(400, "malformed request line: the method is not a token or "
                                     f"the target not visible ASCII: {self.requestline!r}")
                return False
            return True

        def __getattr__(self, name: str):
            """Every method is forwarded (TRACE, PROPFIND, ...), not answered 501 here: the
            service says which it takes (405 with Allow), as its OpenAPI documents."""
            if name.startswith("do_"):
                return self._forward
            raise AttributeError(name)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None,
                       loc: tuple = ()) -> None:
            """Python's HTML error page (and none at all for a request line it takes as
            HTTP/0.9), replaced by the error shape as JSON; the connection is closed."""
            del explain
            self.close_connection = True
            if self.request_version in ("HTTP/0.9", ""):
                self.request_version = "HTTP/1.1"
            sentence = message or self.responses.get(code, ("error",))[0]
            if code == 400 and message and message.startswith("Bad request"):
                sentence = f"malformed request: {message}"
            kind = "invalid_request" if code < 500 else "not_implemented"
            self._reply(code, error_body(sentence, kind, loc), CLOSE)

        def _connection(self, url: str, timeout: float) -> http.client.HTTPConnection:
            conn = local.connections.get(url)
            if conn is None:
                parsed = urllib.parse.urlsplit(url)
                assert parsed.hostname is not None  # a backend's url: http://host:port
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
            `limit` bytes, within the body deadline (TimeoutError)."""
            self.reader.expect("body", float(table.limits["body_timeout_s"]))
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
            parts: list[bytes] = []
            total = 0
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
            if self.path == "/metrics" and self.command in ("GET", "HEAD"):
                refused = server.refused_connections if server is not None else 0
                return self._reply(200, answers.render(refused), METRICS_TEXT)
            if self.path == "/-/router":
                table.refresh()
                info = {"backends": table.backends, "limits": table.limits,
                        "down": health.by_version(), **admission.counters(),
                        **traffic.info()}
                if server is not None:
                    with server.count_lock:
                        info.update(connections=server.connections,
                                    refused_connections=server.refused_connections,
                                    evicted_connections=server.evicted_connections,
                                    connections_by_address=dict(server.by_address))
                return self._reply(200, json.dumps(info).encode(), JSON)
            table.refresh()
            limits = table.limits
            self.drained = False
            try:
                body = self._read_body(int(limits["max_body_bytes"]))
            except _TooLarge:
                close = {} if self.drained else {"Connection": "close"}
                self.close_connection = not self.drained
                most = int(limits["max_body_bytes"])
                return self._reply(413, error_body(f"the request body is above {most} bytes",
                                                   "body_too_large", ("body",)),
                                   {**JSON, **close})
            except _BadBody as exc:
                self.close_connection = True
                return self._reply(400, error_body(f"malformed request body: {exc}",
                                                   "invalid_request", ("body",)), CLOSE)
            except TimeoutError:
                return self._timed_out("body")
            if not admission.acquire(limits):
                return self._reply(503, error_body(
                    "overloaded: too many requests in flight; retry after 1 s", "overloaded"),
                    SHED_HEADERS)
            try:
                self._send_to_backends(body, float(limits["backend_timeout_s"]))
            finally:
                admission.release()

        def _send_to_backends(self, body: bytes | None, timeout: float) -> None:
            headers = {k: v for k, v in self.headers.raw_items() if k.lower() not in HOP_BY_HOP}
            # _forward refreshed the table; a keyed request goes to its sticky arm first
            candidates, assigned = traffic.order(self.command, self.path, body)
            if not candidates:
                return self._reply(503, error_body(
                    "no version is routed: nothing serves yet; retry after 1 s", "no_backend"),
                    SHED_HEADERS)
            candidates = [b for b in candidates if not health.is_down(b["url"])]
            if not candidates:  # at once: waiting the backend timeout helps no one
                return self._reply(503, error_body(
                    "no version is ready: each is down; retry after 1 s", "no_backend"),
                    SHED_HEADERS)
            for backend in candidates:
                url = backend["url"]
                for attempt in range(2):  # a stale keep-alive connection gets one retry
                    conn = self._connection(url, timeout)
                    reused = conn.sock is not None
                    began = time.perf_counter()
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                        payload = response.read()
                        latency_ms = (time.perf_counter() - began) * 1000
                    except TimeoutError:
                        self._drop(url)
                        health.check(url, f"did not answer within {timeout:g} s")
                        return self._reply(504, error_body(
                            f"{backend['version']} did not answer within {timeout:g} s",
                            "timeout"), {**JSON, "X-Mlstack-Version": backend["version"]})
                    except ConnectionRefusedError:
                        self._drop(url)
                        health.mark_down(url, "refused the connection")
                        break  # not listening: the next backend
                    except (ConnectionResetError, BrokenPipeError, http.client.HTTPException,
                            OSError):
                        self._drop(url)
                        if attempt == 0 and reused:
                            continue
                        break
                    out = [(k, v) for k, v in response.msg.raw_items()
                           if k.lower() not in HOP_BY_HOP]
                    out.append(("X-Mlstack-Version", backend["version"]))
                    if response.status == 503 and response.getheader("Retry-After") is None:
                        out.append(("Retry-After", RETRY_AFTER["Retry-After"]))
                    if response.will_close:
                        self._drop(url)
                    length = response.getheader("Content-Length")
                    self._reply(response.status, payload, out,
                                head_length=length if self.command == "HEAD" else None)
                    return traffic.answered(self.command, self.path, body, headers,
                                            response.status, payload, latency_ms,
                                            backend["version"], assigned)
            return self._reply(503, error_body(
                "no version answered: each refused the connection or hung up; retry after 1 s",
                "no_backend"), SHED_HEADERS)

        def _reply(self, status: int, payload: bytes, headers: dict | list,
                   write_timeout: float | None = None, head_length: str | None = None) -> None:
            """The answer; Date and Server are added only where the backend's answer has
            none (a header list keeps a backend's repeated headers, Set-Cookie). A HEAD's
            answer keeps the backend's Content-Length (its GET's body length, not 0)."""
            pairs = list(headers.items()) if isinstance(headers, dict) else headers
            names = {k.lower() for k, _ in pairs}
            if getattr(self, "path", "").split("?", 1)[0] not in NOT_COUNTED:
                answers.count(status, next((v for k, v in pairs
                                            if k == "X-Mlstack-Version"), "router"))
            self.connection.settimeout(write_timeout or float(table.limits["idle_timeout_s"]))
            self.log_request(status)
            self.send_response_only(status)
            if "server" not in names:
                self.send_header("Server", SERVER)
            if "date" not in names:
                self.send_header("Date", self.date_time_string())
            for key, value in pairs:
                self.send_header(key, value)
            self.send_header("Content-Length", head_length or str(len(payload)))
            self._headers_buffer.append(b"\r\n")  # the head and the body in one write
            if self.command != "HEAD":
                self._headers_buffer.append(payload)
            self.wfile.write(b"".join(self._headers_buffer))
            self._headers_buffer = []

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward

    return Handler


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    use_fast_header_parser()
    server = RouterServer((args.host, args.port), BackendTable(args.config))
    server.serve_forever()


if __name__ == "__main__":
    main()
