"""The router's serving core (mlstack.ops.local.router, whose docstring is the spec): one
event loop (uvloop when importable) serving every client connection, each read by an HTTP/1.1
parser (httptools when importable) and answered in order (pipelined requests too); requests
forwarded over the pooled kept-alive backend connections (mlstack.ops.local.router_backends).
The blocking parts stay off the loop: the health probe and the shadow mirror run in their own
threads, a timed-out backend's /readyz check in the loop's executor."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import deque

from mlstack.ops.local import router_http as wire
from mlstack.ops.local.router_admission import Admission, Answers
from mlstack.ops.local.router_backends import BackendHealth, BackendPool
from mlstack.ops.local.router_table import BackendTable
from mlstack.ops.local.traffic_split import TrafficSplit

LISTEN_BACKLOG = 1024
STALLED_AFTER_S = 1.0  # a connection this long without a whole request head is stalled
DRAIN_LIMIT = 16 << 20  # a too large body up to this size is read and dropped, so the
# client, still sending, gets its 413 rather than a reset connection
SWEEP_EVERY_S = 0.1  # deadlines (client phases, backend timeouts) are checked this often
PENDING_MAX = 16  # requests of one connection read ahead of its answers; then reads pause
LOG = logging.getLogger(__name__)
EXPECTS_BODY = frozenset({b"POST", b"PUT", b"PATCH"})  # http.client sends them Content-Length


class Request:
    """A request read whole: what is forwarded of it, and how to answer it."""

    __slots__ = ("method", "target", "headers", "accept_encoding", "body", "keep_alive")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                 accept_encoding: bool, body: bytes | None, keep_alive: bool) -> None:
        self.method, self.target, self.headers = method, target, headers
        self.accept_encoding, self.body, self.keep_alive = accept_encoding, body, keep_alive


class Refusal:
    """An answer the router words itself without forwarding (400, 408, 413, 414, 431, 505),
    kept in order behind the requests read before it."""

    __slots__ = ("status", "payload", "lines", "close", "target")

    def __init__(self, status: int, payload: bytes, lines, close: bool,
                 target: bytes = b"") -> None:
        self.status, self.payload, self.lines, self.close = status, payload, lines, close
        self.target = target


class _Stop(Exception):
    """Raised in a parser callback: the request was refused, nothing more is read."""


class ClientConnection(asyncio.Protocol):
    """One client connection: its requests parsed, checked, and answered in order; its
    deadlines (idle, head, body) checked by the server's sweep."""

    def __init__(self, server: RouterServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport
        self.host = ""
        self.parser = server.http.RequestParser(self)
        self.pending: deque[Request | Refusal] = deque()
        self.busy = self.closed = self.refused = self.evicted = self.eof = False
        self.ignoring = self.paused = self.write_paused = False
        # the phase being read ("idle": no request started), since when, until when
        self.phase, self.began, self.deadline, self.head_s = "idle", 0.0, 0.0, 0.0
        self.heads = 0  # request heads read whole on this connection
        self.head_bytes = 0
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_count = 0
        self.accept_encoding = self.chunked = self.draining = False
        self.length: int | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.limit = 0
        self.expect = False

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if peer else ""
        full = self.server.accept(self)
        if full is not None:
            self.refused = True
            transport.write(wire.refusal(full))
            transport.close()
            return
        self._idle()

    def _idle(self) -> None:
        """A new request may begin: the idle deadline holds until its first byte."""
        limits = self.server.table.limits
        now = self.loop.time()
        self.phase, self.began = "idle", now
        self.deadline = now + limits["idle_timeout_s"]
        self.head_s = limits["header_timeout_s"]

    def stalled(self, now: float) -> bool:
        """Still reading a request head, or never sent one, for STALLED_AFTER_S or more: a
        slow client's connection (a real client's head arrives at once; a client that keeps
        an idle connection for its next request has sent one before)."""
        return (not self.evicted and not self.busy and now - self.began >= STALLED_AFTER_S
                and (self.phase == "head" or (self.phase == "idle" and not self.heads)))

    def evict(self) -> None:
        self.evicted = True
        self._close()

    def check(self, now: float) -> None:
        """The sweep: end a connection whose phase's deadline passed (408 for a request's
        head or body; an idle one closes quietly)."""
        if self.busy or self.closed or self.ignoring or now < self.deadline:
            return
        if self.transport.get_write_buffer_size():  # a client that does not read its answers
            self.ignoring = True
            self.transport.abort()
        elif self.phase == "idle":
            self._close()
        elif self.phase == "head":
            self._timed_out("headers", "header_timeout_s")
        else:
            self._timed_out("body", "body_timeout_s")

    def _timed_out(self, part: str, limit: str) -> None:
        seconds = self.server.table.limits[limit]
        sentence = f"the request's {part} did not arrive within {seconds:g} s"
        self._refuse(408, sentence, "request_timeout", (part,))

    def data_received(self, data: bytes) -> None:
        if self.ignoring:
            return
        if self.phase != "body":
            self.head_bytes += len(data)
            if self.head_bytes > wire.MAX_HEAD:
                self._refuse(431, "the request's headers are too long", "invalid_request",
                             ("headers",))
                return
        try:
            self.parser.feed_data(data)
        except wire.ParserUpgrade as exc:  # Upgrade is hop-by-hop: a plain request here
            offset = int(exc.args[0]) if exc.args else len(data)
            self.parser = self.server.http.RequestParser(self)
            if offset < len(data):
                self.data_received(data[offset:])
        except wire.CallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                raise
        except wire.ParserError as exc:
            if not self.ignoring:
                sentence = str(exc) or type(exc).__name__
                self._refuse(400, f"malformed request: {sentence}", "invalid_request", ())

    def eof_received(self) -> bool:
        """The client closed its side: what it sent whole is still answered; a request it
        cut off is answered 400 and never forwarded."""
        self.eof = True
        if not self.ignoring:
            if self.phase == "head":
                self._refuse(400, "the request's headers were cut off", "invalid_request",
                             ("headers",))
            elif self.phase == "body":
                self._refuse(400, "malformed request body: the body ended before its end "
                             "(its Content-Length, or its last chunk)", "invalid_request",
                             ("body",))
        if self.busy or self.pending:
            return True  # kept open for the answers; closed after the last
        self._close()
        return True

    def pause_writing(self) -> None:
        """The client reads its answers slower than they come: read no more requests."""
        self.write_paused = True
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy:
            self._dispatch()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pending.clear()
        if not self.refused:
            self.server.release(self)

    def _close(self) -> None:
        self.ignoring = True
        if not self.transport.is_closing():
            self.transport.close()

    # -- the parser's callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        now = self.loop.time()
        self.phase = "head"
        if self.heads:  # a kept-alive connection's next request: stalled from now on
            self.began = now
        self.deadline = min(self.deadline, now + self.head_s)
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > wire.MAX_LINE:
            self._refuse(414, f"the request line is above {wire.MAX_LINE} bytes",
                         "invalid_request", ())
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.phase == "body":  # a chunked body's trailer: dropped
            return
        self.header_count += 1
        if self.header_count > wire.MAX_HEADERS or len(name) + len(value) > wire.MAX_LINE:
            self._refuse(431, f"a header line is above {wire.MAX_LINE} bytes, or there are "
                         f"more than {wire.MAX_HEADERS} headers", "invalid_request",
                         ("headers",))
            raise _Stop
        lower = name.lower()
        if lower in wire.HOP_BY_HOP_BYTES:
            if lower == b"content-length":
                self.length = int(value)
            elif lower == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif lower == b"expect":
                self.expect = value.lower() == b"100-continue"
            return
        if lower == b"accept-encoding":
            self.accept_encoding = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        now = self.loop.time()
        self.phase, self.began, self.head_bytes = "body", now, 0
        self.heads += 1
        server = self.server
        server.table.refresh()
        limits = server.table.limits
        self.deadline = now + limits["body_timeout_s"]
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method()
        if version == "0.9":  # a status line is always sent
            line = f"{method.decode('latin-1')} {self.url.decode('latin-1')}"
            self._refuse(400, "an HTTP/1.x request line is expected ('METHOD /path HTTP/1.1'), "
                         f"got {line!r}", "invalid_request", ())
            raise _Stop
        if version[0] != "1":
            self._refuse(505, f"HTTP version {version} is not supported (HTTP/1.x is)",
                         "invalid_request", ())
            raise _Stop
        if not wire.METHOD.fullmatch(method) or not wire.TARGET.fullmatch(self.url):
            line = f"{method.decode('latin-1')} {self.url.decode('latin-1')}"
            self._refuse(400, "malformed request line: the method is not a token or the "
                         f"target not visible ASCII: {line!r}", "invalid_request", ())
            raise _Stop
        self.limit = int(limits["max_body_bytes"])
        if self.length is not None and self.length > self.limit:
            if self.length > DRAIN_LIMIT:
                self._too_large(close=True)
                raise _Stop
            self.draining = True  # read and dropped: 413 once it is all in
        if self.expect and version == "1.1" and not (self.busy or self.pending):
            self.transport.write(wire.CONTINUE)  # as http.server did: the body may come

    def on_body(self, data: bytes) -> None:
        if self.draining:
            return
        self.body_size += len(data)
        if self.body_size > self.limit:  # chunked: too large, not drained
            self._too_large(close=True)
            raise _Stop
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.phase = "idle"
        if self.draining:
            self._too_large(close=False)
            self._reset()
            return
        body = (b"".join(self.body) if self.length is not None or self.chunked else None)
        self.pending.append(Request(self.parser.get_method(), self.url, self.headers,
                                    self.accept_encoding, body,
                                    self.parser.should_keep_alive()))
        self._reset()
        if len(self.pending) > PENDING_MAX and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        if not self.busy:
            self._dispatch()

    # -- answers -------------------------------------------------------------------------

    def _too_large(self, close: bool) -> None:
        most = self.limit
        lines = wire.CLOSE_LINES if close else wire.JSON_LINES
        self._queue(Refusal(413, wire.error_body(f"the request body is above {most} bytes",
                                                 "body_too_large", ("body",)),
                            lines, close, self.url))

    def _refuse(self, status: int, sentence: str, kind: str, loc: tuple) -> None:
        """An answer the router words itself, after the answers to the requests before it;
        the connection closes after it and nothing more is read."""
        self._queue(Refusal(status, wire.error_body(sentence, kind, loc), wire.CLOSE_LINES,
                            True))

    def _queue(self, refusal: Refusal) -> None:
        if refusal.close:
            self.ignoring = True
        self.pending.append(refusal)
        if not self.busy:
            self._dispatch()

    def _dispatch(self) -> None:
        """Answer what is pending, in order, until a request goes to a backend."""
        server = self.server
        while self.pending and not self.busy and not self.write_paused:
            if self.closed:
                self.pending.clear()
                return
            item = self.pending.popleft()
            if isinstance(item, Refusal):
                self._write(item.target, item.status,
                            wire.answer_bytes(item.status, item.payload, item.lines), None)
                if item.close:
                    self._close()
                    return
                continue
            own = server.own_page(item)
            if own is not None:
                status, payload, lines = own
                self._write(item.target, status,
                            wire.answer_bytes(status, payload, lines,
                                              body=item.method != b"HEAD"), None)
                if not item.keep_alive:
                    self._close()
                    return
                continue
            self.busy = True
            self.loop.create_task(self._forward(item))
            return
        if self.busy or self.pending:  # a backend's answer, or the client reading, awaited
            return
        if self.paused and not self.ignoring and not self.write_paused:
            self.paused = False
            self.transport.resume_reading()
        if self.eof:
            self._close()
        elif self.phase == "idle" and not self.ignoring:
            self._idle()

    def _write(self, target: bytes, status: int, data: bytes, version: str | None) -> None:
        """Count the answer (the router's own pages and the probes aside) and send it."""
        if target.partition(b"?")[0] not in wire.NOT_COUNTED:
            self.server.answers.count(status, version or "router")
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    async def _forward(self, request: Request) -> None:
        server = self.server
        try:
            limits = server.table.limits
            admission = server.admission
            if not (admission.try_acquire(limits) or await admission.acquire(limits)):
                self._own(request, 503, wire.error_body(
                    "overloaded: too many requests in flight; retry after 1 s", "overloaded"),
                    wire.SHED_LINES)
                return
            try:
                await self._send_to_backends(request, float(limits["backend_timeout_s"]))
            finally:
                admission.release()
        except Exception:  # a fault of the router's own: the connection ends, it serves on
            LOG.exception("the router failed a request")
            self._close()
        finally:
            self.busy = False
            if not request.keep_alive:
                self._close()
            self._dispatch()

    def _own(self, request: Request, status: int, payload: bytes, lines,
             version: str | None = None) -> None:
        self._write(request.target, status, wire.answer_bytes(
            status, payload, lines, body=request.method != b"HEAD"), version)

    async def _send_to_backends(self, request: Request, timeout: float) -> None:
        server = self.server
        method, path = request.method.decode("latin-1"), request.target.decode("latin-1")
        candidates, assigned = server.traffic.order(method, path, request.body)
        if not candidates:
            return self._own(request, 503, wire.error_body(
                "no version is routed: nothing serves yet; retry after 1 s", "no_backend"),
                wire.SHED_LINES)
        health = server.health
        candidates = [b for b in candidates if not health.is_down(b["url"])]
        if not candidates:  # at once: waiting the backend timeout helps no one
            return self._own(request, 503, wire.error_body(
                "no version is ready: each is down; retry after 1 s", "no_backend"),
                wire.SHED_LINES)
        pool, head_only = server.pool, request.method == b"HEAD"
        for backend in candidates:
            url = backend["url"]
            data = _request_bytes(request, pool.address(url)[2])
            for attempt in range(2):  # a stale kept-alive connection gets one retry
                conn = pool.take(url)
                reused = conn is not None
                began = time.perf_counter()
                try:
                    if conn is None:
                        conn = await pool.connect(url, timeout)
                    answer = await conn.send(data, timeout, head_only)
                except TimeoutError:
                    if conn is not None:
                        conn.close()
                    why = f"did not answer within {timeout:g} s"
                    await self.loop.run_in_executor(None, health.check, url, why)
                    return self._own(request, 504, wire.error_body(
                        f"{backend['version']} {why}", "timeout"),
                        (*wire.JSON_LINES, _version_line(backend["version"])),
                        backend["version"])
                except ConnectionRefusedError:
                    health.mark_down(url, "refused the connection")
                    break  # not listening: the next backend
                except OSError:
                    if attempt == 0 and reused:
                        continue
                    break
                latency_ms = (time.perf_counter() - began) * 1000
                self._answer(request, answer, backend["version"])
                headers = ({k.decode("latin-1"): v.decode("latin-1")
                            for k, v in request.headers}
                           if server.traffic.shadow.entry is not None else {})
                return server.traffic.answered(method, path, request.body, headers,
                                               answer.status, answer.body, latency_ms,
                                               backend["version"], assigned)
        return self._own(request, 503, wire.error_body(
            "no version answered: each refused the connection or hung up; retry after 1 s",
            "no_backend"), wire.SHED_LINES)

    def _answer(self, request: Request, answer, version: str) -> None:
        """The backend's answer as it came (its repeated headers too), less the hop-by-hop
        headers, with X-Mlstack-Version (and Retry-After on a 503 without one)."""
        lines = []
        has_server = has_date = has_retry = False
        length = None
        for name, value in answer.headers:
            lower = name.lower()
            if lower in wire.HOP_BY_HOP_BYTES:
                if lower == b"content-length":
                    length = value
                continue
            if lower == b"server":
                has_server = True
            elif lower == b"date":
                has_date = True
            elif lower == b"retry-after":
                has_retry = True
            lines.append(name + b": " + value + b"\r\n")
        lines.append(_version_line(version))
        if answer.status == 503 and not has_retry:
            lines.append(b"Retry-After: 1\r\n")
        head = request.method == b"HEAD"
        self._write(request.target, answer.status, wire.answer_bytes(
            answer.status, answer.body, lines, has_server=has_server, has_date=has_date,
            head_length=length if head else None, body=not head), version)


_VERSION_LINES: dict[str, bytes] = {}


def _version_line(version: str) -> bytes:
    line = _VERSION_LINES.get(version)
    if line is None:
        line = _VERSION_LINES[version] = f"X-Mlstack-Version: {version}\r\n".encode()
    return line


def _request_bytes(request: Request, host: bytes) -> bytes:
    """The request as http.client sent it: Host and Accept-Encoding first, the client's
    end-to-end headers, a Content-Length (0 for a bodiless POST, PUT or PATCH), the body."""
    out = [request.method, b" ", request.target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    if not request.accept_encoding:
        out.append(b"Accept-Encoding: identity\r\n")
    for name, value in request.headers:
        out += (name, b": ", value, b"\r\n")
    body = request.body
    if body is not None:
        out += (b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
    elif request.method in EXPECTS_BODY:
        out.append(b"Content-Length: 0\r\n\r\n")
    else:
        out.append(b"\r\n")
    return b"".join(out)


class RouterServer:
    """The router on one listening socket: `serve_forever` runs its event loop in the calling
    thread until `shutdown` (from another thread); at most `max_connections` client
    connections, one more answered 503 at once and closed, so no backlog builds up."""

    def __init__(self, address: tuple[str, int], table: BackendTable, *,
                 pure_python: bool = False) -> None:
        self.table = table
        self.http = wire.choose(pure_python)
        self.admission = Admission()
        self.answers = Answers()
        self.health = BackendHealth(table)
        self.traffic = TrafficSplit(table)
        self.connections = 0
        self.refused_connections = 0
        self.evicted_connections = 0
        self.by_address: dict[str, int] = {}
        self.clients: dict[str, set[ClientConnection]] = {}  # the connections, by address
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(LISTEN_BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.loop = self.http.new_event_loop()
        self.pool = BackendPool(self.loop, self.http.ResponseParser)
        self._stopped = threading.Event()
        self._stop: asyncio.Future | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        table.on_change.append(self._table_changed)

    def _table_changed(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.pool.keep_only,
                                           {b["url"] for b in self.table.backends})

    # -- serving ---------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        del poll_interval  # the loop waits on its sockets, not by polling
        loop = self.loop
        try:
            self._stop = loop.create_future()
            server = loop.run_until_complete(loop.create_server(
                lambda: ClientConnection(self), sock=self.socket, backlog=LISTEN_BACKLOG))
            loop.run_until_complete(self._stop)
            server.close()
            for conns in list(self.clients.values()):
                for conn in list(conns):
                    conn._close()
            self.pool.close()
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever (called from another thread) and wait until it has."""
        if self._stop is None or self.loop.is_closed():
            return
        stop = self._stop

        def stopped() -> None:
            if not stop.done():
                stop.set_result(None)

        self.loop.call_soon_threadsafe(stopped)
        self._stopped.wait()

    def server_close(self) -> None:
        try:
            self.socket.close()
        except OSError:
            pass

    # -- connections -----------------------------------------------------------------------

    def accept(self, conn: ClientConnection) -> str | None:
        """Count a new connection in, or say why it is refused (a cap reached and no stalled
        connection of that address to end for it)."""
        self.table.refresh()
        limits, host = self.table.limits, conn.host
        full: str | None = None
        if self.by_address.get(host, 0) >= limits["max_connections_per_address"]:
            full = f"overloaded: too many connections from {host}; retry after 1 s"
            if self._evict_stalled(host):
                full = None
        elif self.connections >= limits["max_connections"]:
            full = "overloaded: too many connections; retry after 1 s"
            if self._evict_stalled(max(self.by_address, key=self.by_address.__getitem__)):
                full = None
        if full:
            self.refused_connections += 1
            return full
        self.connections += 1
        self.by_address[host] = self.by_address.get(host, 0) + 1
        self.clients.setdefault(host, set()).add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_EVERY_S, self._sweep)
        return None

    def release(self, conn: ClientConnection) -> None:
        self.connections -= 1
        host = conn.host
        self.by_address[host] -= 1
        if not self.by_address[host]:
            del self.by_address[host]
        conns = self.clients.get(host)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.clients[host]

    def _evict_stalled(self, host: str) -> bool:
        """Make room for a new connection: end the longest stalled connection of `host`. As
        nginx frees idle connections when it runs out: a slow client cannot keep a real one
        out, even from the same address (all local clients share 127.0.0.1). The ended
        connection counts until it is gone, briefly."""
        now = self.loop.time()
        stalled = [c for c in self.clients.get(host, ()) if c.stalled(now)]
        if not stalled:
            return False
        min(stalled, key=lambda c: c.began).evict()
        self.evicted_connections += 1
        return True

    def _sweep(self) -> None:
        now = self.loop.time()
        for conns in list(self.clients.values()):
            for conn in list(conns):
                conn.check(now)
        self.pool.sweep(now)
        if self.clients or self.pool.busy:
            self._sweeper = self.loop.call_later(SWEEP_EVERY_S, self._sweep)
        else:
            self._sweeper = None

    # -- the router's own pages ------------------------------------------------------------

    def own_page(self, request: Request) -> tuple[int, bytes, tuple] | None:
        """GET /metrics and GET /-/router, answered by the router; None for a request to
        forward."""
        if request.target == b"/metrics" and request.method in (b"GET", b"HEAD"):
            return 200, self.answers.render(self.refused_connections), wire.METRICS_LINES
        if request.target == b"/-/router":
            self.table.refresh()
            info = {"backends": self.table.backends, "limits": self.table.limits,
                    "down": self.health.by_version(), **self.admission.counters(),
                    **self.traffic.info(), "connections": self.connections,
                    "refused_connections": self.refused_connections,
                    "evicted_connections": self.evicted_connections,
                    "connections_by_address": dict(self.by_address),
                    "server": {"loop": self.http.loop, "parser": self.http.parser}}
            return 200, json.dumps(info).encode(), wire.JSON_LINES
        return None
