"""The local weighted router and the load generator, against real HTTP servers on loopback."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mlstack.ops.local import procs
from mlstack.ops.local.loadtest import run_load
from mlstack.ops.local.router import write_table


def backend(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(float(self.headers.get("X-Delay") or 0))
            payload = json.dumps({"backend": name, "echo": json.loads(body or b"{}"),
                                  "chunked": "transfer-encoding" in self.headers}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def routed(tmp_path):
    servers = {"v1": backend("v1"), "v2": backend("v2")}
    config = tmp_path / "router.json"
    write_table(config, [])
    port = procs.free_port()
    pid = procs.start_background(
        [sys.executable, "-m", "mlstack.ops.local.router", "--port", str(port), "--config",
         str(config)], cwd=Path(__file__).parent.parent, env=None, log=tmp_path / "router.log")
    procs.wait_ready(f"http://127.0.0.1:{port}/-/router", pid, 20)

    def set_weights(weights: dict[str, int], limits: dict | None = None) -> None:
        write_table(config, [{"version": v, "weight": w,
                              "url": f"http://127.0.0.1:{servers[v].server_port}"}
                             for v, w in weights.items()], limits)

    yield port, set_weights, servers
    assert procs.stop_process(pid) and not procs.is_alive(pid)
    for server in servers.values():
        server.shutdown()


def test_weights_split_traffic_exactly_and_tag_the_version(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 95, "v2": 5})
    seen = {"v1": 0, "v2": 0}
    with httpx.Client() as client:
        for i in range(100):
            r = client.post(f"http://127.0.0.1:{port}/predict", json={"i": i})
            assert r.status_code == 200 and r.json()["echo"] == {"i": i}
            assert r.headers["x-mlstack-version"] == r.json()["backend"]
            seen[r.json()["backend"]] += 1
    assert seen == {"v1": 95, "v2": 5}  # smooth weighted round-robin is exact per cycle


def test_a_backend_that_goes_away_does_not_fail_requests(routed):
    port, set_weights, servers = routed
    set_weights({"v1": 50, "v2": 50})
    servers["v2"].shutdown()
    servers["v2"].server_close()
    result = run_load(f"http://127.0.0.1:{port}/predict", [{"x": 1}], duration=1.0, rate=50)
    assert result.total["errors"] == 0 and result.total["requests"] == 50
    assert set(result.by_version) == {"v1"}


def test_no_backend_answers_503(routed):
    port, _set_weights, _ = routed
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={})
    assert r.status_code == 503


def test_load_generator_stays_on_loopback():
    with pytest.raises(ValueError):
        run_load("http://10.0.0.1:80/predict", [{}], duration=0.1)


def test_http_status_needs_no_http_library(routed, monkeypatch):
    """status, down and rollback poll with the standard library (the core install has no
    httpx): a status code, or the error's name when nothing answers; proxies are ignored."""
    port, _, _ = routed
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    assert procs.http_status(f"http://127.0.0.1:{port}/-/router") == 200
    assert isinstance(procs.http_status(f"http://127.0.0.1:{port}/predict"), int)
    closed = procs.free_port()
    assert procs.http_status(f"http://127.0.0.1:{closed}/readyz", timeout=1) == "URLError"


def post_all(port: int, count: int, delay: float) -> list[httpx.Response]:
    """`count` requests at once, each asking the backend to take `delay` seconds."""
    def one(_):
        return httpx.post(f"http://127.0.0.1:{port}/predict", json={}, timeout=10,
                          headers={"X-Delay": str(delay)})

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_admission_control_sheds_at_once_and_leaves_no_backlog(routed):
    """Beyond max_in_flight + max_queue, requests get 503 with Retry-After at once; the
    queue waits at most queue_timeout_s; and right after the burst a request is served
    without waiting behind it."""
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_in_flight": 2, "max_queue": 2, "queue_timeout_s": 0.2})
    began = time.perf_counter()
    answers = post_all(port, 12, delay=0.6)
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 2 and codes.count(503) == 10, codes
    shed = [r for r in answers if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert time.perf_counter() - began < 3
    info = httpx.get(f"http://127.0.0.1:{port}/-/router").json()
    assert info["shed"] == 10 and info["in_flight"] == 0 and info["waiting"] == 0
    quick = time.perf_counter()
    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={}).status_code == 200
    assert time.perf_counter() - quick < 1


def test_a_queued_request_gets_a_slot_when_one_frees_in_time(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_in_flight": 1, "max_queue": 4, "queue_timeout_s": 2.0})
    answers = post_all(port, 3, delay=0.2)
    assert [r.status_code for r in answers] == [200, 200, 200]


def test_a_backend_that_does_not_answer_in_time_gets_504(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"backend_timeout_s": 0.3})
    began = time.perf_counter()
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={}, headers={"X-Delay": "2"},
                   timeout=10)
    assert r.status_code == 504 and r.headers["x-mlstack-version"] == "v1"
    assert time.perf_counter() - began < 1.5
    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={"ok": 1}).json()["echo"] == \
        {"ok": 1}


def test_request_bodies_above_the_limit_get_413_by_length_or_chunked(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_body_bytes": 1000})
    big = json.dumps({"x": "a" * 2000}).encode()
    r = httpx.post(f"http://127.0.0.1:{port}/predict", content=big,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():
        for _ in range(4):
            yield b" " * 400

    r = httpx.post(f"http://127.0.0.1:{port}/predict", content=chunks())
    assert r.status_code == 413


def test_chunked_request_bodies_are_passed_through(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100})

    def chunks():
        yield b'{"rows": [{"customer_'
        yield b'id": 1001}]}'

    r = httpx.post(f"http://127.0.0.1:{port}/predict", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["echo"] == {"rows": [{"customer_id": 1001}]}
    assert r.json()["chunked"] is False  # forwarded with a Content-Length


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out:
                break
        return out


def test_malformed_requests_get_400_and_the_router_keeps_serving(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100})
    # a request line Python's server cannot read is answered as HTTP/0.9: no status line
    assert b"400 - Bad request" in raw_request(port, b"GARBAGE\r\n\r\n")
    bad_length = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert raw_request(port, bad_length).startswith(b"HTTP/1.1 400")
    bad_chunk = (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\n")
    assert raw_request(port, bad_chunk).startswith(b"HTTP/1.1 400")
    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={}).status_code == 200


def refused(sock: socket.socket) -> bool:
    """The router answered this (idle) connection: it was over the cap."""
    sock.settimeout(0.3)
    try:
        return sock.recv(100).startswith(b"HTTP/1.1 503")
    except TimeoutError:
        return False


def test_connections_beyond_the_cap_are_refused_with_503_at_once(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_connections": 2})
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    for _attempt in range(5):  # a connection of the fixture's may still be closing
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        if not any(refused(sock) for sock in idle):
            break
        for sock in idle:
            sock.close()
        time.sleep(0.5)
    try:
        began = time.perf_counter()
        answer = raw_request(port, request)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        assert time.perf_counter() - began < 1
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={}).status_code == 200


def test_the_load_generator_extends_until_done_and_reports_contention(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100})
    result = run_load(f"http://127.0.0.1:{port}/predict", [{"x": 1}], duration=0.2, rate=50,
                      max_duration=5, done=lambda rec: rec.total.samples >= 30)
    assert 30 <= result.total["requests"] <= 60 and result.total["samples"] >= 30
    c = result.contention
    assert c["cpus"] >= 1 and c["load_per_cpu_before"] >= 0
    assert c["sender_lag_p99_ms"] is not None and 0 <= c["cpu_busy_during"] <= 1


def test_router_limits_follow_the_spec():
    from mlstack.frontend.analysis import analyze_spec
    from mlstack.ops.local.deploy import router_limits
    from tests.conftest import BLUEPRINTS

    churn = analyze_spec(BLUEPRINTS / "churn" / "mlstack.yaml").system
    limits = router_limits(churn, 50.0)  # 50 rps at a p99 of 100 ms: 5 in flight, 4x
    assert limits["max_in_flight"] == 20 == limits["max_queue"]
    assert limits["queue_timeout_s"] == 0.1 and limits["backend_timeout_s"] >= 5.0
    assert router_limits(churn, 10_000.0)["max_in_flight"] == 256
