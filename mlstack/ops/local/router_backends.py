"""The router's side toward the service versions (mlstack.ops.local.router): kept-alive
connections to each backend, pooled and reused across requests and client connections, and
which backends are down (BackendHealth)."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
import urllib.parse

from mlstack.ops.local import router_http as wire
from mlstack.ops.local.router_table import BackendTable

PROBE_EVERY_S = 0.5  # a down backend's /readyz is asked this often
PROBE_TIMEOUT_S = 1.0  # and must answer within this
IDLE_KEPT = 256  # idle connections kept per backend; one more is closed


class BackendAnswer:
    """A backend's whole answer: its status, its header pairs as sent, its body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class BackendConnection(asyncio.Protocol):
    """One connection to a backend, one request at a time. `send` writes a request and
    returns a future of its BackendAnswer; a connection the backend closed (or left
    unanswered past the timeout: the pool's sweep) fails it with an OSError (TimeoutError).
    After a whole answer that keeps the connection alive it goes back to its pool."""

    def __init__(self, pool: BackendPool, url: str) -> None:
        self.pool, self.url = pool, url
        self.loop = pool.loop
        self.transport: asyncio.Transport
        self.parser = pool.ResponseParser(self)
        self.future: asyncio.Future | None = None
        self.lost = False
        self.last = 0.0  # when the backend last sent something (or the request went out)
        self.timeout = 0.0
        self.head_only = False
        self.headers_done = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def send(self, data: bytes, timeout: float, head_only: bool) -> asyncio.Future:
        self.future = future = self.loop.create_future()
        self.headers, self.body, self.headers_done = [], [], False
        self.head_only, self.timeout = head_only, timeout
        self.last = self.loop.time()
        self.pool.busy.add(self)
        self.transport.write(data)
        return future

    def data_received(self, data: bytes) -> None:
        self.last = self.loop.time()
        if self.future is None:  # nothing asked: a backend that talks out of turn
            self.transport.abort()
            return
        try:
            self.parser.feed_data(data)
        except wire.ParserError as exc:
            self._fail(ConnectionResetError(f"a malformed answer: {exc}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # after the head: a chunked answer's trailer, dropped
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        if self.head_only:  # no body follows the head of a HEAD's answer
            self._finish(keep_alive=False)

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        if self.future is not None and not self.head_only:
            self._finish(self.parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        future, self.future = self.future, None
        self.pool.busy.discard(self)
        if keep_alive:
            self.pool.give_back(self)
        else:
            self.close()
        if future is not None and not future.done():
            future.set_result(BackendAnswer(self.status, self.headers, b"".join(self.body)))

    def _fail(self, exc: BaseException) -> None:
        future, self.future = self.future, None
        self.pool.busy.discard(self)
        self.close()
        if future is not None and not future.done():
            future.set_exception(exc)

    def timed_out(self) -> None:
        self._fail(TimeoutError(f"no answer within {self.timeout:g} s"))

    def close(self) -> None:
        self.lost = True
        self.pool.forget(self)
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.pool.forget(self)
        if self.future is None:
            return
        names = {name.lower() for name, _ in self.headers}
        if (self.headers_done and b"content-length" not in names
                and b"transfer-encoding" not in names):
            self._finish(keep_alive=False)  # an answer that ran to the end of the connection
        else:
            self._fail(ConnectionResetError("the backend closed the connection"))


class BackendPool:
    """Idle kept-alive connections by backend url, and those waiting for an answer (swept
    for the backend timeout: no answer, nor a byte of one, for `timeout` seconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, response_parser) -> None:
        self.loop = loop
        self.ResponseParser = response_parser
        self.idle: dict[str, list[BackendConnection]] = {}
        self.busy: set[BackendConnection] = set()
        self.addresses: dict[str, tuple[str, int, bytes]] = {}

    def address(self, url: str) -> tuple[str, int, bytes]:
        """(host, port, the Host header's value) of a backend's url, as http.client sent."""
        found = self.addresses.get(url)
        if found is None:
            parsed = urllib.parse.urlsplit(url)
            assert parsed.hostname is not None  # a backend's url: http://host:port
            port = parsed.port or 80
            host = parsed.hostname if port == 80 else f"{parsed.hostname}:{port}"
            found = self.addresses[url] = (parsed.hostname, port, host.encode("idna"))
        return found

    def take(self, url: str) -> BackendConnection | None:
        idle = self.idle.get(url)
        while idle:
            conn = idle.pop()
            if not conn.lost:
                return conn
        return None

    async def connect(self, url: str, timeout: float) -> BackendConnection:
        host, port, _ = self.address(url)
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(lambda: BackendConnection(self, url), host, port),
            timeout)
        return conn

    def give_back(self, conn: BackendConnection) -> None:
        idle = self.idle.setdefault(conn.url, [])
        if len(idle) < IDLE_KEPT:
            idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: BackendConnection) -> None:
        self.busy.discard(conn)
        idle = self.idle.get(conn.url)
        if idle and conn in idle:
            idle.remove(conn)

    def sweep(self, now: float) -> None:
        for conn in [c for c in self.busy if now - c.last >= c.timeout]:
            conn.timed_out()

    def keep_only(self, urls: set[str]) -> None:
        """Close the idle connections to backends no longer routed."""
        for url in [u for u in self.idle if u not in urls]:
            for conn in self.idle.pop(url):
                conn.close()

    def close(self) -> None:
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.close()
        for conn in list(self.busy):
            conn.close()


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
        slow request is not a dead backend). Blocking: the router calls it in a thread."""
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
