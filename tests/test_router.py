"""The local weighted router and the load generator, against real HTTP servers on loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from mlstack.ops.local import procs
from mlstack.ops.local.loadtest import run_load
from mlstack.ops.local.router import write_table


def backend(name: str, after: str = "keep-alive") -> ThreadingHTTPServer:
    """A service version on loopback that echoes the request body. A request with `X-Hold`
    waits until the server's `release` event is set (at the fixture's end at the latest);
    one with `X-Status` is answered that status (and `X-Retry-After` as its Retry-After).
    `after` each request: "keep-alive" (as BentoML does), "close" (answers, then closes the
    connection without saying `Connection: close`, as a server whose keep-alive timeout ran
    out does), or "hang-up" (closes the connection without answering). `requests` counts the
    requests that reached it."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with server.count_lock:
                server.requests += 1
            if after == "hang-up":
                self.close_connection = True
                return
            if "X-Hold" in self.headers:
                server.release.wait(60)
            time.sleep(float(self.headers.get("X-Delay") or 0))
            payload = json.dumps({"backend": name, "echo": json.loads(body or b"{}"),
                                  "chunked": "transfer-encoding" in self.headers}).encode()
            self.send_response(int(self.headers.get("X-Status") or 200))
            if "X-Retry-After" in self.headers:
                self.send_header("Retry-After", self.headers["X-Retry-After"])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            if after == "close":
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.release = threading.Event()
    server.requests = 0
    server.count_lock = threading.Lock()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def wait_until(check, seconds: float = 20.0, what: str = "the condition"):
    """Poll `check` until it returns something true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not hold within {seconds:g} s"
        time.sleep(0.05)
    return found


def router_info(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/-/router", timeout=30).json()


@pytest.fixture
def routed(tmp_path):
    servers = {"v1": backend("v1"), "v2": backend("v2"), "closes": backend("closes", "close"),
               "hangs-up": backend("hangs-up", "hang-up")}
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
    for server in servers.values():
        server.release.set()
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
    """Judged by what the router answered: on a busy machine the load generator may leave
    requests unsent (8 outstanding already), which says nothing of the router. Every request
    sent is answered 200 by v1, and the router admitted each one; the first 8 are always
    sent, and the weighted round-robin tries v2 first for every other request."""
    port, set_weights, servers = routed
    set_weights({"v1": 50, "v2": 50})
    servers["v2"].shutdown()
    servers["v2"].server_close()
    result = run_load(f"http://127.0.0.1:{port}/predict", [{"x": 1}], duration=1.0, rate=50)
    assert result.total["requests"] == 50
    sent = result.total["requests"] - result.unsent
    assert sent >= 8 and result.unanswered == 0
    assert result.statuses == {200: sent}, (result.statuses, result.contention)
    assert set(result.by_version) == {"v1"} and result.by_version["v1"]["samples"] == sent
    info = router_info(port)
    assert info["admitted"] == sent and info["shed"] == 0


def test_no_backend_answers_503(routed):
    port, _set_weights, _ = routed
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={})
    assert r.status_code == 503


def test_a_backend_that_closed_a_pooled_connection_gets_the_request_on_a_new_one(routed):
    """The router keeps its connections to a backend open between requests; a backend may
    close one while it idles (its keep-alive timeout). This backend closes every connection
    after its answer, so each request after the first finds the pooled connection closed:
    the router sends it again, once, on a new connection, and the client never sees it."""
    port, set_weights, servers = routed
    set_weights({"closes": 100})
    with httpx.Client(timeout=30) as client:  # one connection: one pool in the router
        answers = [client.post(f"http://127.0.0.1:{port}/predict", json={"i": i})
                   for i in range(5)]
    assert [(r.status_code, r.json().get("echo")) for r in answers] == \
        [(200, {"i": i}) for i in range(5)]
    assert servers["closes"].requests == 5  # each reached the backend once


def test_a_backend_that_hangs_up_on_a_new_connection_is_not_sent_the_request_again(routed):
    """Only a pooled connection is retried: a request that failed on a new connection may
    have been acted on, so it is not sent again (a prediction is not idempotent)."""
    port, set_weights, servers = routed
    set_weights({"hangs-up": 100})
    with httpx.Client(timeout=30) as client:  # no version answered: 503, as documented
        for _ in range(2):
            answer = client.post(f"http://127.0.0.1:{port}/predict", json={})
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert servers["hangs-up"].requests == 2


def test_a_half_written_or_malformed_table_keeps_the_last_good_one(routed, tmp_path):
    """The router re-reads its table when the file changes. write_table replaces it
    atomically, but a file cut off (a full disk, a writer that died) or of another shape
    must not stop the routing: the last good table serves until a good one is written."""
    port, set_weights, servers = routed
    config = tmp_path / "router.json"  # the fixture's
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    set_weights({"v1": 100})
    assert client.post("/predict", json={}).json()["backend"] == "v1"
    url = f"http://127.0.0.1:{servers['v2'].server_port}"
    whole = json.dumps({"backends": [{"version": "v2", "weight": 100, "url": url}],
                        "limits": {}})
    bad_tables = [whole[:len(whole) // 2], "", "null", "[]", '{"backends": {}}',
                  '{"backends": [{"version": "v2", "weight": 100}]}',
                  '{"backends": [{"version": "v2", "weight": "all", "url": "' + url + '"}]}',
                  '{"backends": [], "limits": [1]}']
    for bad in bad_tables:
        mtime = config.stat().st_mtime_ns
        config.write_text(bad)
        os.utime(config, ns=(mtime + 10**9, mtime + 10**9))  # seen as changed, surely
        for _ in range(3):
            r = client.post("/predict", json={})
            assert r.status_code == 200 and r.json()["backend"] == "v1", (bad, r.text)
        backends = client.get("/-/router").json()["backends"]
        assert [b["version"] for b in backends] == ["v1"], bad
    set_weights({"v2": 100})  # a good table again
    assert client.post("/predict", json={}).json()["backend"] == "v2"
    client.close()


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


def timed_post(client: httpx.Client, port: int, headers: dict) -> tuple[httpx.Response, float]:
    """One request: its answer and the seconds it took."""
    began = time.perf_counter()
    answer = client.post(f"http://127.0.0.1:{port}/predict", json={}, headers=headers)
    return answer, time.perf_counter() - began


QUEUE_TIMEOUT = 8.0  # long, so that a wait for a slot is far apart from a shed at once


def test_admission_control_sheds_at_once_and_leaves_no_backlog(routed):
    """Beyond max_in_flight + max_queue, requests get 503 with Retry-After at once; the
    queue waits at most queue_timeout_s; and after the burst nothing is left waiting. The
    two requests admitted are held in the backend until the others are answered, so those
    answers cannot have waited for a slot to free."""
    port, set_weights, servers = routed
    set_weights({"v1": 100}, {"max_in_flight": 2, "max_queue": 2,
                              "queue_timeout_s": QUEUE_TIMEOUT})
    limits = httpx.Limits(max_connections=16)
    with httpx.Client(timeout=60, limits=limits) as client, ThreadPoolExecutor(12) as pool:
        burst = [pool.submit(timed_post, client, port, {"X-Hold": "1"}) for _ in range(12)]
        wait_until(lambda: sum(f.done() for f in burst) >= 10, 60, "10 answers")
        shed = [f.result() for f in burst if f.done()]
        held = [f for f in burst if not f.done()]
        assert len(shed) == 10 and len(held) == 2
        assert all(r.status_code == 503 and r.headers["retry-after"] == "1" for r, _ in shed)
        seconds = sorted(took for _, took in shed)
        # 8 shed at once; 2 waited in the queue for the whole timeout, then shed
        assert seconds[7] < QUEUE_TIMEOUT / 2 <= seconds[8], seconds
        assert router_info(port)["in_flight"] == 2  # the held two, still in the backend
        servers["v1"].release.set()
        assert [f.result()[0].status_code for f in held] == [200, 200]
    info = wait_until(lambda: (i := router_info(port))["in_flight"] == 0 and i, 20,
                      "no request in flight")
    assert info["shed"] == 10 and info["waiting"] == 0 and info["admitted"] == 2
    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={}).status_code == 200


def test_a_queued_request_gets_a_slot_when_one_frees_in_time(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_in_flight": 1, "max_queue": 4,
                              "queue_timeout_s": QUEUE_TIMEOUT})
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: timed_post(client, port, {"X-Delay": "0.2"}),
                                range(3)))
    assert [r.status_code for r, _ in answers] == [200, 200, 200]


def test_a_backend_that_does_not_answer_in_time_gets_504(routed):
    """The table's backend timeout (2 s) applies, not the default (10 s): the answer comes
    after at least half the one and well before the other."""
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"backend_timeout_s": 2.0})
    began = time.perf_counter()
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={}, headers={"X-Hold": "1"},
                   timeout=30)
    took = time.perf_counter() - began
    assert r.status_code == 504 and r.headers["x-mlstack-version"] == "v1"
    assert 1.0 <= took < 6.0, took
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
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out:
                break
        return out


def raw_answer(port: int, data: bytes, *, cut: bool = False
               ) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Send `data` on a new connection (then close the sending side when `cut`, as a client
    that went away mid-request): the status, the headers as sent (repeats kept) and the
    body of the answer, or None when the router closed the connection without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        if cut:
            sock.shutdown(socket.SHUT_WR)
        answer = http.client.HTTPResponse(sock)
        try:
            answer.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return answer.status, answer.getheaders(), answer.read()


def assert_error_shape(status: int, headers: list[tuple[str, str]], body: bytes) -> dict:
    """The service's error shape, which the router's own answers share."""
    names = {k.lower(): v for k, v in headers}
    assert names["content-type"] == "application/json", (status, headers)
    data = json.loads(body)
    assert set(data) == {"error", "detail"} and isinstance(data["error"], str), data
    assert data["error"] and data["detail"], data
    for item in data["detail"]:
        assert set(item) == {"loc", "msg", "type"} and isinstance(item["loc"], list), data
        assert isinstance(item["msg"], str) and isinstance(item["type"], str), data
    return data


def test_malformed_requests_get_a_plain_400_and_the_router_keeps_serving(routed):
    """A request line Python's server cannot read was answered as HTTP/0.9: an HTML page
    without a status line. Every malformed request gets a status line and the JSON error."""
    port, set_weights, servers = routed
    set_weights({"v1": 100})
    bad = [b"GARBAGE\r\n\r\n", b"GET /predict\r\n\r\n",  # HTTP/0.9: not served
           b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
           b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
           b"POST /predict HTTP/9.x\r\n\r\n"]
    for data in bad:
        answer = raw_answer(port, data)
        assert answer is not None and answer[0] == 400, (data, answer)
        assert b"<html" not in answer[2].lower() and b"<!doctype" not in answer[2].lower()
        assert_error_shape(*answer)
    assert servers["v1"].requests == 0
    assert httpx.post(f"http://127.0.0.1:{port}/predict", json={}).status_code == 200


def test_a_request_the_client_cut_off_is_never_forwarded(routed):
    """Headers without their blank line, a request line alone, or a body shorter than its
    Content-Length, then the client closes its side: answered 400 (or not at all), and the
    backend never sees them."""
    port, set_weights, servers = routed
    set_weights({"v1": 100})
    cut_offs = [b"POST /predict HTTP/1.1\r\nHost: x\r\n",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: applic",
                b"POST /predict HTTP/1.1",
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}"]
    for data in cut_offs:
        answer = raw_answer(port, data, cut=True)
        assert answer is None or answer[0] == 400, (data, answer)
        if answer is not None:
            assert_error_shape(*answer)
    # a whole request whose client closes its side right after is served
    whole = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    answer = raw_answer(port, whole, cut=True)
    assert answer is not None and answer[0] == 200, answer
    assert servers["v1"].requests == 1


def test_503s_carry_retry_after_the_backends_too(routed):
    port, set_weights, _ = routed
    url = f"http://127.0.0.1:{port}/predict"
    r = httpx.post(url, json={})  # no version routed: the router's own 503
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    set_weights({"v1": 100})
    r = httpx.post(url, json={}, headers={"X-Status": "503"})  # the backend sheds
    assert r.status_code == 503 and r.headers.get_list("retry-after") == ["1"]
    r = httpx.post(url, json={}, headers={"X-Status": "503", "X-Retry-After": "7"})
    assert r.status_code == 503 and r.headers.get_list("retry-after") == ["7"]


def test_answers_carry_one_date_and_one_server(routed):
    """The router passes the backend's Date and Server and adds its own only to the answers
    it words itself."""
    port, set_weights, _ = routed
    set_weights({"v1": 100})
    forwarded = raw_answer(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 2\r\n\r\n{}")
    own = raw_answer(port, b"GET /-/router HTTP/1.1\r\nHost: x\r\n\r\n")
    for answer in (forwarded, own):
        assert answer is not None and answer[0] == 200
        names = [k.lower() for k, _ in answer[1]]
        assert names.count("date") == 1 and names.count("server") == 1, answer[1]
    assert dict(forwarded[1])["Server"].startswith("BaseHTTP")  # the backend's
    assert dict(own[1])["Server"] == "mlstack-router"


def test_the_routers_own_refusals_have_the_service_error_shape(routed):
    """400, 413, 503 (no version; too many in flight; too many connections) and 504: one
    JSON shape, as the service answers, so a client parses one."""
    port, set_weights, servers = routed
    url = f"http://127.0.0.1:{port}/predict"
    answers = {"503 no version": httpx.post(url, json={})}
    set_weights({"v1": 100}, {"max_body_bytes": 100, "backend_timeout_s": 1.0,
                              "max_in_flight": 1, "max_queue": 0})
    answers["413"] = httpx.post(url, json={"x": "a" * 200})
    answers["504"] = httpx.post(url, json={}, headers={"X-Hold": "1"}, timeout=30)
    answers["400"] = raw_answer(port, b"POST /predict HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    with ThreadPoolExecutor(1) as pool:  # one request held in flight: the next is shed
        set_weights({"v1": 100}, {"max_in_flight": 1, "max_queue": 0})
        held = pool.submit(httpx.post, url, json={}, headers={"X-Hold": "1"}, timeout=60)
        wait_until(lambda: router_info(port)["in_flight"] == 1, 20, "one request in flight")
        answers["503 in flight"] = httpx.post(url, json={})
        servers["v1"].release.set()
        assert held.result().status_code == 200
    # httpx's answers as raw_answer's: (status, headers, body)
    answers = {k: a if isinstance(a, tuple) else (a.status_code, list(a.headers.items()),
                                                  a.content) for k, a in answers.items()}
    assert {k: a[0] for k, a in answers.items()} == {
        "503 no version": 503, "413": 413, "504": 504, "400": 400, "503 in flight": 503}
    for answer in answers.values():
        assert_error_shape(*answer)
    set_weights({"v1": 100}, {"max_connections": 1})
    with httpx.Client(timeout=30) as client:  # holds the one connection
        assert client.get(f"http://127.0.0.1:{port}/-/router").status_code == 200
        refused = wait_until(lambda: (a := raw_answer(port, b"GET / HTTP/1.1\r\n\r\n"))
                             and a[0] == 503 and a, 20, "a connection refused")
    assert_error_shape(*refused)


def held_connection(port: int) -> http.client.HTTPConnection | None:
    """A keep-alive connection the router accepted (it answered a request and keeps the
    connection open), or None when it was refused as over the cap."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/-/router")
    answer = conn.getresponse()
    answer.read()
    if answer.status == 200 and not answer.will_close:
        return conn
    conn.close()
    return None


def test_connections_beyond_the_cap_are_refused_with_503_at_once(routed):
    """With both allowed connections held open by the test, a third is answered 503: at
    once, as no slot can free while it waits (a router that queued it would never answer:
    raw_request then times out)."""
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_connections": 2})
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    held: list[http.client.HTTPConnection] = []
    try:
        # a connection of the fixture's may still be closing: refused, then tried again
        def accepted_two() -> bool:
            conn = held_connection(port)
            if conn is not None:
                held.append(conn)
            return len(held) == 2

        wait_until(accepted_two, 20, "two connections accepted")
        answer = raw_request(port, request)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        held[0].request("GET", "/-/router")  # the held connections are still served
        assert held[0].getresponse().status == 200
    finally:
        for conn in held:
            conn.close()
    wait_until(lambda: httpx.post(f"http://127.0.0.1:{port}/predict", json={}).status_code
               == 200, 20, "a request served once the held connections closed")


def test_the_load_generator_extends_until_done_and_reports_contention(routed):
    port, set_weights, _ = routed
    set_weights({"v1": 100})
    result = run_load(f"http://127.0.0.1:{port}/predict", [{"x": 1}], duration=0.2, rate=50,
                      max_duration=30, done=lambda rec: rec.total.samples >= 30)
    # done is asked every rate/4 = 12 sends with at most 8 requests outstanding, so at most
    # 29 + 8 + 12 are sent (on a busy machine more may be left unsent, as the cap says); and
    # it stopped long before max_duration's 1500
    sent = result.total["requests"] - result.unsent
    assert result.statuses == {200: sent} and 30 <= sent <= 49, (sent, result.statuses)
    assert result.total["requests"] < 1500
    c = result.contention
    assert c["cpus"] >= 1 and c["load_per_cpu_before"] >= 0
    assert c["sender_lag_p99_ms"] is not None and 0 <= c["cpu_busy_during"] <= 1


def test_while_the_only_backend_answers_nothing_requests_get_503_at_once_then_it_serves(
        routed):
    """A backend that accepts connections and answers nothing, as BentoML does with both of
    its workers killed: the first request waits the backend timeout (5 s here), the router
    then finds its /readyz unanswered too and marks it down; from then on each request gets
    503 with Retry-After at once, well under the backend timeout, instead of waiting it out.
    When the backend answers again, a probe brings it back and requests are served."""
    port = routed[0]
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # the kernel completes connections; nothing reads them
    backend_port = hung.getsockname()[1]
    _write_only(routed, port, backend_port)
    url = f"http://127.0.0.1:{port}/predict"
    with httpx.Client(timeout=30) as client:
        first = client.post(url, json={})
        assert first.status_code == 504  # waited the backend timeout once
        wait_until(lambda: router_info(port)["down"].get("only"), 20, "the backend down")
        for _ in range(5):
            began = time.monotonic()
            r = client.post(url, json={})
            took = time.monotonic() - began
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.json()["detail"][0]["type"] == "no_backend"
            assert took < 2.5, f"{took:.1f} s: the request waited for the backend"
        server = _serve_on(hung)  # the workers are back
        try:
            wait_until(lambda: client.post(url, json={"back": 1}).status_code == 200, 20,
                       "the backend serving again")
            assert router_info(port)["down"] == {}
        finally:
            server.shutdown()
            server.server_close()


def test_a_new_table_forgets_which_backends_were_down(routed):
    """The control plane writes a table only after the versions in it were seen ready (a
    rollback that restarted the current version on its port, say): the router then sends them
    requests at once instead of after its next probe. Here the backend still refuses, so only
    the new table can have cleared it, and the next request finds it down again."""
    port = routed[0]
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        _write_only(routed, port, refusing.getsockname()[1])
        url = f"http://127.0.0.1:{port}/predict"
        assert httpx.post(url, json={}, timeout=30).status_code == 503
        assert "only" in router_info(port)["down"]
        time.sleep(0.05)  # mtime granularity
        _write_only(routed, port, refusing.getsockname()[1])  # the same table, written again
        assert router_info(port)["down"] == {}
        assert httpx.post(url, json={}, timeout=30).status_code == 503
        assert router_info(port)["down"] == {"only": "refused the connection"}
    finally:
        refusing.close()


def _write_only(routed, port: int, backend_port: int) -> None:
    """Route everything to the backend on `backend_port`, as `only`, with a 5 s timeout."""
    _port, set_weights, servers = routed
    servers["only"] = SimpleNamespace(server_port=backend_port, release=threading.Event(),
                                      shutdown=lambda: None)  # the test stops its own
    set_weights({"only": 100}, {"backend_timeout_s": 5.0})
    wait_until(lambda: [b["version"] for b in router_info(port)["backends"]] == ["only"], 10,
               "the new table")


def _serve_on(sock: socket.socket) -> ThreadingHTTPServer:
    """An HTTP server on an already listening socket: the connections waiting there too."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server
