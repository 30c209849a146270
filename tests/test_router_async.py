"""The router's event-loop core (mlstack.ops.local.router_server): pipelined requests, pooled
backend connections, the loop and parser it runs on, the documented refusals of what it
cannot read, and the pure-Python fallback when httptools and uvloop are missing."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httptools
import httpx
import pytest

from mlstack.ops.local import router_parser
from mlstack.ops.local.router import BackendTable, RouterServer, write_table
from tests.test_router import (
    assert_error_shape,
    raw_answer,
    routed,  # noqa: F401  (the fixture: a router and backends)
    router_info,
)


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict, bytes]]:
    """`count` answers read in turn from one connection: (status, headers, body), through
    one buffered reader (answers that arrive together are all kept)."""
    stream = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(stream.readline().split()[1])
        headers = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, value = line.decode("latin-1").split(":", 1)
            headers[name.strip().lower()] = value.strip()
        answers.append((status, headers, stream.read(int(headers["content-length"]))))
    return answers


def post_bytes(body: dict, path: str = "/predict") -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data)


def test_pipelined_requests_are_answered_in_order(routed):  # noqa: F811
    """Three requests in one write (the router's own page between two forwarded ones): three
    answers, in the order they were sent."""
    port, set_weights, _ = routed
    set_weights({"v1": 100})
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(post_bytes({"i": 0}) + b"GET /-/router HTTP/1.1\r\nHost: x\r\n\r\n"
                     + post_bytes({"i": 2}))
        answers = read_answers(sock, 3)
    assert [a[0] for a in answers] == [200, 200, 200]
    assert json.loads(answers[0][2])["echo"] == {"i": 0}
    assert "backends" in json.loads(answers[1][2])
    assert json.loads(answers[2][2])["echo"] == {"i": 2}


def test_the_router_runs_on_uvloop_and_httptools(routed):  # noqa: F811
    port, _, _ = routed
    assert router_info(port)["server"] == {"loop": "uvloop", "parser": "httptools"}


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /predict HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
])
def test_what_the_router_cannot_read_gets_its_documented_status(routed, request_bytes,  # noqa: F811
                                                                status):
    """As mlstack.runtime.http_contract documents (ROUTER_ERRORS): 505 for an HTTP version
    other than 1.x, 414 for a request line above 65536 bytes, 431 for a header line above it
    or more than 100 headers; never forwarded, in the error shape."""
    port, set_weights, servers = routed
    set_weights({"v1": 100})
    answer = raw_answer(port, request_bytes)
    assert answer is not None and answer[0] == status, answer
    assert_error_shape(*answer)
    assert servers["v1"].requests == 0


def counting_backend() -> ThreadingHTTPServer:
    """A version that answers every POST and counts the connections it accepted."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", "1234")
            self.end_headers()

    class Server(ThreadingHTTPServer):
        accepted = 0

        def process_request(self, request, client_address):
            self.accepted += 1
            super().process_request(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture(params=[False, True], ids=["native", "pure-python"])
def in_process(request, tmp_path) -> Iterator[tuple[int, ThreadingHTTPServer]]:
    """A router in this process (on uvloop and httptools, or on the pure-Python fallback) in
    front of one counting backend."""
    backend = counting_backend()
    config = tmp_path / "router.json"
    write_table(config, [{"version": "v1", "weight": 100,
                          "url": f"http://127.0.0.1:{backend.server_port}"}])
    router = RouterServer(("127.0.0.1", 0), BackendTable(Path(config)),
                          pure_python=request.param)
    thread = threading.Thread(target=router.serve_forever, daemon=True)
    thread.start()
    yield router.server_address[1], backend
    router.shutdown()
    router.server_close()
    thread.join(10)
    backend.shutdown()
    backend.server_close()


def test_a_backend_connection_is_reused_across_requests_and_clients(in_process):
    """Ten clients, one after the other, each on its own connection: the backend accepts one
    connection, the router's pooled one (no connection per request or per client)."""
    port, backend = in_process
    for i in range(10):
        with httpx.Client(timeout=30) as client:
            answer = client.post(f"http://127.0.0.1:{port}/predict", json={"i": i})
            assert answer.status_code == 200 and answer.json() == {"i": i}
            assert answer.headers["x-mlstack-version"] == "v1"
    assert backend.accepted == 1


def test_the_fallback_serves_chunked_bodies_heads_and_refusals(in_process):
    """Both cores alike: a chunked body forwarded whole, a HEAD's answer with its GET's
    length, a pipelined pair, and a malformed request answered 400 in the error shape."""
    port, _ = in_process

    def chunks():
        yield b'{"rows": [{"customer_'
        yield b'id": 1001}]}'

    with httpx.Client(timeout=30) as client:
        answer = client.post(f"http://127.0.0.1:{port}/predict", content=chunks())
        assert answer.status_code == 200 and answer.json() == {"rows": [{"customer_id": 1001}]}
        head = client.head(f"http://127.0.0.1:{port}/docs.json")
        assert head.status_code == 200 and head.headers["content-length"] == "1234"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(post_bytes({"i": 1}) + post_bytes({"i": 2}))
        assert [json.loads(a[2]) for a in read_answers(sock, 2)] == [{"i": 1}, {"i": 2}]
    answer = raw_answer(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: no\r\n\r\n")
    assert answer is not None and answer[0] == 400
    assert_error_shape(*answer)


class Events:
    """What a parser called back, in order."""

    def __init__(self) -> None:
        self.events: list = []
        self.parser = None  # the parser, once made: asked its version and keep-alive

    def on_message_begin(self):
        self.events.append("begin")

    def on_url(self, url):
        self.events.append(("url", url))

    def on_header(self, name, value):
        self.events.append(("header", name, value))

    def on_headers_complete(self):
        self.events.append("headers")

    def on_body(self, body):
        self.events.append(("body", body))

    def on_message_complete(self):
        if self.parser is None:
            self.events.append("complete")
        else:
            self.events.append(("complete", self.parser.get_http_version(),
                                self.parser.should_keep_alive()))


def _joined(events: list) -> list:
    """Body and url pieces joined (the parsers may split them differently)."""
    out: list = []
    for event in events:
        if out and isinstance(event, tuple) and event[0] in ("body", "url") \
                and isinstance(out[-1], tuple) and out[-1][0] == event[0]:
            out[-1] = (event[0], out[-1][1] + event[1])
        elif not (isinstance(event, tuple) and event[0] == "body" and not event[1]):
            out.append(event)
    return out


STREAMS = [
    b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Spaced:  v  \r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n"
    b"T: 1\r\n\r\n",
    b"GET /p HTTP/1.0\r\n\r\n",
]


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("piece", [1, 7, 1 << 20])
def test_the_pure_python_parser_calls_back_as_httptools_does(stream, piece):
    """Fed whole or a few bytes at a time: the same callbacks with the same values, and the
    same version and keep-alive after each message."""
    found = []
    for parser_class in (httptools.HttpRequestParser, router_parser.RequestParser):
        events = Events()
        parser = events.parser = parser_class(events)
        for at in range(0, len(stream), piece):
            parser.feed_data(stream[at:at + piece])
        found.append(_joined(events.events))
    assert found[0] == found[1]


@pytest.mark.parametrize("stream", [b"G\x01T / HTTP/1.1\r\n\r\n", b"GET / HTTP/x.1\r\n\r\n",
                                    b"POST / HTTP/1.1\r\nContent-Length: a\r\n\r\n",
                                    b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
                                    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_the_pure_python_parser_refuses_what_httptools_refuses(stream):
    with pytest.raises(httptools.HttpParserError):
        httptools.HttpRequestParser(Events()).feed_data(stream)
    with pytest.raises(router_parser.ParserError):
        router_parser.RequestParser(Events()).feed_data(stream)
