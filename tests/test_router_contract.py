"""The router stays inside the service's HTTP contract (mlstack.runtime.http_contract): every
method reaches the service, which says which it takes; its answers and headers pass
unchanged; a request the router cannot forward is its own 400. The whole contract through the
router, with schemathesis, is tests/engine/test_api_contract.py."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mlstack.ops.local import procs
from mlstack.ops.local.router import write_table
from tests.test_router import assert_error_shape, raw_answer

DOCS = json.dumps({"openapi": "3.0.2", "paths": {}}).encode()


def strict_service() -> ThreadingHTTPServer:
    """A service as the contract has it: GET/HEAD /docs.json, POST elsewhere, and 405 with
    Allow (the service's error shape) for any other method. `methods` records what came."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def __getattr__(self, name: str):
            if name.startswith("do_"):
                return self.answer
            raise AttributeError(name)

        def answer(self):
            server.methods.append(self.command)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/docs.json" and self.command in ("GET", "HEAD"):
                status, body, allow = 200, DOCS, None
            elif self.path != "/docs.json" and self.command == "POST":
                status, body, allow = 200, b'{"ok": true}', None
            else:
                status, allow = 405, "GET, HEAD" if self.path == "/docs.json" else "POST"
                body = json.dumps({"error": "method not allowed", "detail": [
                    {"loc": [], "msg": "method not allowed", "type": "method_not_allowed"}]}
                ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if allow:
                self.send_header("Allow", allow)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.methods = []
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def routed_service(tmp_path):
    service = strict_service()
    config = tmp_path / "router.json"
    write_table(config, [{"version": "v1", "weight": 100,
                          "url": f"http://127.0.0.1:{service.server_port}"}])
    port = procs.free_port()
    pid = procs.start_background(
        [sys.executable, "-m", "mlstack.ops.local.router", "--port", str(port), "--config",
         str(config)], cwd=Path(__file__).parent.parent, env=None, log=tmp_path / "router.log")
    procs.wait_ready(f"http://127.0.0.1:{port}/-/router", pid, 20)
    yield port, service
    assert procs.stop_process(pid) and not procs.is_alive(pid)
    service.shutdown()


def test_every_method_reaches_the_service_which_answers_405_with_allow(routed_service):
    """TRACE and methods the router has no handler for are forwarded, not answered 501 by
    the router (a status the service's OpenAPI does not document)."""
    port, service = routed_service
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for method in ("TRACE", "PROPFIND", "GET", "PUT", "DELETE", "OPTIONS", "PATCH"):
            answer = client.request(method, "/predict")
            assert answer.status_code == 405, (method, answer.text)
            assert answer.headers["allow"] == "POST"
            assert answer.json()["detail"][0]["type"] == "method_not_allowed"
    assert service.methods == ["TRACE", "PROPFIND", "GET", "PUT", "DELETE", "OPTIONS", "PATCH"]


def test_a_heads_answer_keeps_the_length_of_its_get(routed_service):
    port, _ = routed_service
    answer = httpx.head(f"http://127.0.0.1:{port}/docs.json", timeout=30)
    assert answer.status_code == 200 and answer.content == b""
    assert answer.headers["content-length"] == str(len(DOCS))


@pytest.mark.parametrize("line", [b"GET /docs\x80.json HTTP/1.1", b"G\x01T /docs.json HTTP/1.1",
                                  b"GET /docs\x7f.json HTTP/1.1"])
def test_a_request_line_it_cannot_forward_is_its_own_400(routed_service, line):
    """A method that is not a token, or a target that is not visible ASCII: http.client
    cannot send either (the handler died without an answer); a 400 in the error shape, and
    the router keeps serving."""
    port, service = routed_service
    answer = raw_answer(port, line + b"\r\nHost: x\r\n\r\n")
    assert answer is not None and answer[0] == 400, answer
    assert_error_shape(*answer)
    assert service.methods == []
    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={}, timeout=30).status_code == 200
