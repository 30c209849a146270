"""The local weighted router and the load generator, against real HTTP servers on loopback."""

from __future__ import annotations

import json
import sys
import threading
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
            payload = json.dumps({"backend": name, "echo": json.loads(body or b"{}")}).encode()
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

    def set_weights(weights: dict[str, int]) -> None:
        write_table(config, [{"version": v, "weight": w,
                              "url": f"http://127.0.0.1:{servers[v].server_port}"}
                             for v, w in weights.items()])

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
