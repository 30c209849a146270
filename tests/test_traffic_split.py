"""The router's sticky A/B split and shadow mirror (mlstack.ops.local.traffic_split): the
comparison on known answers, then a router in this process in front of fake model servers on
loopback."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mlstack.ops.local import traffic_split
from mlstack.ops.local.router import BackendTable, RouterServer, parse_table, write_table
from mlstack.ops.local.traffic_split import compare
from mlstack.runtime import experiment_stats
from mlstack.runtime.assignment import assign_arm, key_text
from tests.test_router import router_info, wait_until

EXPERIMENT = "churn-ab-v2"
STICKY = {"experiment": EXPERIMENT, "key": "customer_id"}


# -- the comparison --------------------------------------------------------------------------

def rows(*values: object) -> bytes:
    return json.dumps(list(values)).encode()


def test_predict_rows_agree_within_the_tolerance_nulls_and_equal_labels():
    found = compare("/predict?x=1", rows(1.0, 2.0, None, "a", [1, 2], 3, 0.5, True),
                    rows(1.04, 2.2, None, "b", [1, 2], None, 0.75, 1), 0.25)
    # 1.0~1.04 and 0.5~0.75 (exactly the tolerance) agree, 2.0~2.2 too (0.2 <= 0.25); the null
    # pair and the equal lists agree; "a"/"b", 3/null and True/1 (a bool is no number) do not
    assert found.comparable and found.rows_compared == 8 and found.rows_agreeing == 5
    assert found.numeric_rows == 3
    assert found.abs_diff_sum == pytest.approx(0.04 + 0.2 + 0.25)
    assert found.abs_diff_max == pytest.approx(0.25)
    strict = compare("/predict", rows(1.0, 2.0), rows(1.04, 2.0), 0.0)
    assert strict.rows_agreeing == 1 and strict.abs_diff_max == pytest.approx(0.04)


@pytest.mark.parametrize(("path", "primary", "shadow"), [
    ("/predict", rows(1, 2), rows(1)),  # lengths differ
    ("/predict", rows(1), b"not json"),
    ("/predict", b'{"predictions": [1]}', b'{"predictions": [1]}'),  # not a list
    ("/rank", b'{"ranked": [{"id": 1, "score": 1}]}', b'{"query_id": 1}'),
    ("/rank", b'{"ranked": [1, 2]}', b'{"ranked": [1, 2]}'),  # candidates are objects
    ("/other", rows(1), rows(1)),
])
def test_answers_of_another_shape_are_incomparable(path, primary, shadow):
    assert not compare(path, primary, shadow, 0.1).comparable


def ranking(ids: list[int], scores: dict[int, float] | None = None) -> bytes:
    """A /rank answer: candidates with two key fields, in this order."""
    return json.dumps({"query_id": 7, "ranked": [
        {"item_id": i, "shop": "s", "score": (scores or {}).get(i, float(-n))}
        for n, i in enumerate(ids)]}).encode()


def test_rankings_compare_by_overlap_at_ten_and_the_scores_of_shared_candidates():
    primary = ranking(list(range(12)))
    # the shadow ranks item 11 first with a score 100 above, and the rest one place lower
    shadow = json.dumps({"query_id": 7, "ranked": [
        {"shop": "s", "item_id": 11, "score": 89.0},  # fields in another order: the same id
        *[{"item_id": i, "shop": "s", "score": float(-i)} for i in range(11)]]}).encode()
    found = compare("/rank", primary, shadow, 0.0)
    assert found.comparable and found.queries_compared == 1 and found.rows_compared == 1
    assert found.overlap_sum == found.rows_agreeing == pytest.approx(0.9)  # items 0-8 of 0-9
    assert found.numeric_rows == 12 and found.abs_diff_max == pytest.approx(100.0)
    assert found.abs_diff_sum == pytest.approx(100.0)
    # k is the primary's length when below 10: 3 of its 4 in the shadow's first 4
    short = compare("/rank", ranking([1, 2, 3, 4]), ranking([4, 3, 2, 9]), 0.0)
    assert short.rows_agreeing == pytest.approx(0.75)
    shorter = compare("/rank", ranking([1, 2, 3, 4]), ranking([2, 1]), 0.0)
    assert shorter.rows_agreeing == pytest.approx(0.5)  # k is the primary's 4, not 2
    assert compare("/rank", ranking([]), ranking([]), 0.0).rows_agreeing == 1.0
    assert compare("/rank", ranking([]), ranking([1]), 0.0).rows_agreeing == 0.0


# -- sticky assignment ------------------------------------------------------------------------

def test_key_text_gives_one_text_per_key_and_assignment_is_shared():
    assert [key_text(v) for v in (42, 42.0, "42", -3, 2.5, True, None, {"b": 1, "a": [2]})] == \
        ["42", "42", "42", "-3", "2.5", "true", "null", '{"a":[2],"b":1}']
    assert experiment_stats.assign_arm is assign_arm
    assert "assign_arm" in experiment_stats.__all__


def test_the_router_loads_no_numpy():
    code = "import sys, mlstack.ops.local.router; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent).stdout
    assert out.strip() == "False"


def test_the_table_takes_a_shadow_and_a_sticky_entry_or_is_malformed():
    backend = {"version": "v1", "url": "http://127.0.0.1:1", "weight": 100}
    shadow = {"version": "v2", "url": "http://127.0.0.1:2", "tolerance": 0.05}
    parsed = parse_table(json.dumps({"backends": [backend, {**backend, "version": "v2",
                                                           "weight": 0}],
                                     "shadow": shadow, "sticky": STICKY}))
    assert parsed.backends == [backend] and parsed.shadow == shadow
    assert parsed.sticky == STICKY
    plain = parse_table(json.dumps({"backends": [backend]}))
    assert plain.shadow is None and plain.sticky is None
    assert parse_table(json.dumps({"shadow": {**shadow, "tolerance": 0}})).shadow["tolerance"] == 0
    for bad in ({"shadow": {"version": "v2"}}, {"shadow": {**shadow, "url": 5}},
                {"shadow": {**shadow, "tolerance": "5%"}}, {"shadow": {**shadow, "tolerance": -1}},
                {"shadow": {**shadow, "tolerance": True}}, {"shadow": [shadow]},
                {"sticky": {"experiment": EXPERIMENT}}, {"sticky": {**STICKY, "key": ""}},
                {"sticky": "customer_id"}):
        with pytest.raises(ValueError):
            parse_table(json.dumps({"backends": [backend], **bad}))


# -- a router in this process, in front of fake model servers ---------------------------------

def model_server(name: str, offset: float = 0.0) -> ThreadingHTTPServer:
    """A version on loopback. POST /predict {"rows": [...]} answers one element per row:
    its "label", else null for a null "x", else x + `offset`; POST /rank ranks the request's
    "candidates" by "s" (+ 100 for the ids in `boost`). `status` is its answer's status,
    `hold_s` how long it holds each answer (until `release` is set); `seen` keeps each
    request's (path, headers, body)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # the answer's head and body are two writes

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with server.lock:
                server.seen.append((self.path, dict(self.headers), body))
            if server.hold_s:
                server.release.wait(server.hold_s)
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = None
            request = request if isinstance(request, dict) else {}
            if self.path.startswith("/rank"):
                ranked = sorted(({"item_id": c["item_id"],
                                  "score": c["s"] + 100 * (c["item_id"] in server.boost)}
                                 for c in request["candidates"]), key=lambda c: -c["score"])
                payload = json.dumps({"query_id": 7, "ranked": ranked})
            else:
                payload = json.dumps([r["label"] if "label" in r else
                                      None if r.get("x") is None else r["x"] + server.offset
                                      for r in request.get("rows", [])])
            self.send_response(server.status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.name, server.offset, server.status, server.hold_s = name, offset, 200, 0.0
    server.boost, server.seen, server.lock = set(), [], threading.Lock()
    server.release = threading.Event()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_port}"


class Routed:
    """Fake versions, the table file and the routers started on it (in this process)."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = tmp_path / "router.json"
        self.servers = {v: model_server(v) for v in ("v1", "v2", "v3")}
        self.routers: list[RouterServer] = []
        write_table(self.config, [])

    def start(self) -> int:
        router = RouterServer(("127.0.0.1", 0), BackendTable(self.config))
        threading.Thread(target=router.serve_forever, args=(0.05,), daemon=True).start()
        self.routers.append(router)
        return router.server_address[1]

    def stop(self, router: RouterServer) -> None:
        router.shutdown()
        router.server_close()

    def route(self, weights: dict[str, int], *, shadow: str | None = None,
              tolerance: float = 0.05, sticky: dict | None = None, limits: dict | None = None,
              urls: dict[str, str] | None = None) -> None:
        """Write the table; wait until the router serves it."""
        urls = {v: url_of(s) for v, s in self.servers.items()} | (urls or {})
        entry = {"version": shadow, "url": urls[shadow], "tolerance": tolerance} if shadow else None
        before = self.config.stat().st_mtime_ns
        while True:
            write_table(self.config, [{"version": v, "url": urls[v], "weight": w}
                                      for v, w in weights.items()], limits,
                        shadow=entry, sticky=sticky)
            if self.config.stat().st_mtime_ns != before:  # seen as changed, surely
                break
            time.sleep(0.01)
        for router in self.routers:
            wait_until(lambda port=router.server_address[1]: (
                info := router_info(port))["backends"] == json.loads(
                    self.config.read_text())["backends"]
                and (info["shadow"] or {}).get("version") == shadow
                and (info["sticky"] or {}).get("experiment") == (sticky or {}).get("experiment"),
                10, "the new table")


@pytest.fixture
def routed(tmp_path) -> Iterator[Routed]:
    setup = Routed(tmp_path)
    yield setup
    for server in setup.servers.values():
        server.release.set()
    for router in setup.routers:
        setup.stop(router)
    for server in setup.servers.values():
        server.shutdown()
        server.server_close()


def post(client: httpx.Client, port: int, body: object, path: str = "/predict",
         **kwargs) -> httpx.Response:
    return client.post(f"http://127.0.0.1:{port}{path}", json=body, timeout=30, **kwargs)


def keyed(key: object, form: str = "rows") -> dict:
    """A request body that carries the customer id the three ways a request may."""
    return {"rows": {"rows": [{"customer_id": key, "x": 1}]}, "top": {"customer_id": key},
            "query": {"query": {"customer_id": key}, "candidates": []}}[form]


def test_a_key_keeps_its_version_across_requests_forms_and_a_restart(routed):
    port = routed.start()
    routed.route({"v1": 50, "v2": 50}, sticky=STICKY)
    weights = {"v1": 50, "v2": 50}
    keys = [*range(60), *(f"c-{i}" for i in range(60))]
    expected = {k: assign_arm(key_text(k), EXPERIMENT, weights) for k in keys}
    assert set(expected.values()) == {"v1", "v2"}
    with httpx.Client() as client:
        for form, path in (("rows", "/predict"), ("top", "/predict"), ("query", "/rank"),
                           ("rows", "/predict?explain=1")):
            got = {k: post(client, port, keyed(k, form), path).headers["x-mlstack-version"]
                   for k in keys}
            assert got == expected, form
        assert post(client, port, keyed(7.0), "/predict").headers["x-mlstack-version"] == \
            expected[7]  # 7.0 is the key 7
        routed.stop(routed.routers[0])
        port = routed.start()  # a new router: nothing but the hash decides
        assert {k: post(client, port, keyed(k)).headers["x-mlstack-version"]
                for k in keys} == expected
    sticky = router_info(port)["sticky"]
    assert sticky == {**STICKY, "assigned": {v: list(expected.values()).count(v)
                                             for v in ("v1", "v2")},
                      "unkeyed": 0, "fallbacks": 0}


def test_keys_split_by_the_weights_within_a_binomial_bound(routed):
    port = routed.start()
    routed.route({"v1": 50, "v2": 50}, sticky=STICKY)
    n = 2000
    with httpx.Client() as client:
        versions = [post(client, port, keyed(f"user-{i}")).headers["x-mlstack-version"]
                    for i in range(n)]
    assert abs(versions.count("v1") - n / 2) <= 4 * math.sqrt(n / 4)  # 4 sd: 89 keys
    assert router_info(port)["sticky"]["assigned"] == {"v1": versions.count("v1"),
                                                       "v2": versions.count("v2")}


def test_unkeyed_requests_keep_the_weighted_round_robin(routed):
    port = routed.start()
    weights = {"v1": 75, "v2": 25}
    unkeyed = [{"rows": [{"x": 1}]}, {"customer_id": None}, [1, 2], {"query": "q"}, {}]
    with httpx.Client() as client:
        routed.route(weights)  # no sticky entry: the round-robin alone
        plain = [post(client, port, unkeyed[i % 5]).headers["x-mlstack-version"]
                 for i in range(12)]
        assert plain.count("v1") == 9  # exact per cycle of 4
        routed.route(weights, sticky=STICKY)  # a new table starts the round-robin again
        key = next(f"k{i}" for i in range(100)
                   if assign_arm(f"k{i}", EXPERIMENT, weights) == "v2")
        mixed = []
        for i in range(12):  # a keyed request between each: the round-robin does not move
            assert post(client, port, keyed(key)).headers["x-mlstack-version"] == "v2"
            mixed.append(post(client, port, unkeyed[i % 5]).headers["x-mlstack-version"])
        not_json = client.post(f"http://127.0.0.1:{port}/predict", content=b"customer_id=1",
                               timeout=30)
        assert not_json.status_code == 200
        client.get(f"http://127.0.0.1:{port}/predict", timeout=30)  # not a POST: not counted
    assert mixed == plain
    assert router_info(port)["sticky"] == {**STICKY, "assigned": {"v2": 12}, "unkeyed": 13,
                                           "fallbacks": 0}


def test_a_key_whose_version_is_down_falls_back_and_is_counted(routed):
    port = routed.start()
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        routed.route({"v1": 50, "v2": 50}, sticky=STICKY,
                     urls={"v2": f"http://127.0.0.1:{refusing.getsockname()[1]}"})
        keys = [f"c-{i}" for i in range(40)]
        arms = [assign_arm(k, EXPERIMENT, {"v1": 50, "v2": 50}) for k in keys]
        with httpx.Client() as client:
            answers = [post(client, port, keyed(k)) for k in keys]
        assert [(a.status_code, a.headers["x-mlstack-version"]) for a in answers] == \
            [(200, "v1")] * len(keys)
        info = router_info(port)
        assert info["sticky"]["fallbacks"] == arms.count("v2") > 0
        assert info["sticky"]["assigned"] == {"v1": arms.count("v1"), "v2": arms.count("v2")}
        assert "v2" in info["down"]
    finally:
        refusing.close()


def test_sticky_counters_reset_when_the_entry_changes(routed):
    port = routed.start()
    routed.route({"v1": 50, "v2": 50}, sticky=STICKY)
    with httpx.Client() as client:
        for i in range(5):
            post(client, port, keyed(i))
        post(client, port, {})
        assert sum(router_info(port)["sticky"]["assigned"].values()) == 5
        routed.route({"v1": 50, "v2": 50}, sticky={**STICKY, "experiment": "next"})
        assert router_info(port)["sticky"] == {"experiment": "next", "key": "customer_id",
                                               "assigned": {}, "unkeyed": 0, "fallbacks": 0}
        routed.route({"v1": 50, "v2": 50})
        assert router_info(port)["sticky"] is None


# -- the shadow mirror ------------------------------------------------------------------------

def shadow_info(port: int, mirrored: int) -> dict:
    """GET /-/router's shadow entry once `mirrored` copies were sent."""
    return wait_until(lambda: (s := router_info(port)["shadow"])["mirrored"] + s["dropped"]
                      >= mirrored and s, 20, f"{mirrored} copies mirrored")


def test_the_shadow_gets_copies_and_its_differences_are_measured(routed):
    port = routed.start()
    routed.servers["v2"].offset = 0.1  # beyond the tolerance of 0.05
    routed.route({"v1": 100}, shadow="v2", tolerance=0.05)
    with httpx.Client() as client:
        for i in range(20):
            body = {"rows": [{"x": i}, {"x": None}, {"label": "a"}]}
            answer = post(client, port, body, headers={"X-Trace": str(i)})
            assert answer.json() == [i, None, "a"] and answer.headers["x-mlstack-version"] == "v1"
        routed.servers["v1"].status = 503
        assert post(client, port, {"rows": [{"x": 1}]}).status_code == 503  # not mirrored
        routed.servers["v1"].status = 200
        client.get(f"http://127.0.0.1:{port}/predict", timeout=30)  # not a POST: not mirrored
        info = shadow_info(port, 20)
        metrics = client.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert info["version"] == "v2" and info["mirrored"] == 20
    assert info["errors"] == info["dropped"] == info["incomparable"] == 0
    assert info["rows_compared"] == 60 and info["rows_agreeing"] == 40  # nulls, labels
    assert info["agreement"] == pytest.approx(40 / 60)
    assert info["mean_abs_diff"] == pytest.approx(0.1) and info["max_abs_diff"] == \
        pytest.approx(0.1)
    assert info["shadow_latency_ms"]["n"] == info["primary_latency_ms"]["n"] == 20
    assert 0 < info["primary_latency_ms"]["p50"] <= info["primary_latency_ms"]["p99"]
    seen = routed.servers["v2"].seen
    assert len(seen) == 20 and all(h.get("X-Mlstack-Shadow") == "1" for _, h, _ in seen)
    assert [h["X-Trace"] for _, h, _ in seen] == [str(i) for i in range(20)]
    assert json.loads(seen[3][2]) == {"rows": [{"x": 3}, {"x": None}, {"label": "a"}]}
    assert "v2" not in metrics and 'answered_by="v1"' in metrics


def test_rankings_are_mirrored_and_compared_by_overlap(routed):
    port = routed.start()
    routed.servers["v2"].boost = {11}
    routed.route({"v1": 100}, shadow="v2")
    candidates = [{"item_id": i, "s": float(12 - i)} for i in range(12)]
    with httpx.Client() as client:
        for _ in range(4):
            answer = post(client, port, {"query": {"customer_id": 1}, "candidates": candidates},
                          "/rank")
            assert [c["item_id"] for c in answer.json()["ranked"]] == list(range(12))
    info = shadow_info(port, 4)
    assert info["queries_compared"] == info["rows_compared"] == 4
    assert info["agreement"] == pytest.approx(0.9)  # item 11 pushed item 9 out of the top 10
    assert info["numeric_rows"] == 48 and info["max_abs_diff"] == pytest.approx(100.0)


def test_a_failing_or_hanging_shadow_never_slows_the_client(routed, monkeypatch):
    monkeypatch.setattr(traffic_split, "SHADOW_QUEUE_SIZE", 2)
    port = routed.start()
    routed.servers["v2"].status = 500
    routed.route({"v1": 100}, shadow="v2", limits={"backend_timeout_s": 1.0})
    with httpx.Client() as client:
        for i in range(3):
            assert post(client, port, {"rows": [{"x": i}]}).json() == [i]
        failing = shadow_info(port, 3)
        assert failing["errors"] == failing["mirrored"] == 3
        assert failing["rows_compared"] == 0 and failing["agreement"] is None
        routed.servers["v3"].hold_s = 30.0  # answers long after the backend timeout
        routed.route({"v1": 100}, shadow="v3", limits={"backend_timeout_s": 1.0})
        took = []
        for i in range(8):
            began = time.perf_counter()
            assert post(client, port, {"rows": [{"x": i}]}).json() == [i]
            took.append(time.perf_counter() - began)
        assert max(took) < 0.8, took  # the shadow's 1 s timeout is not the client's
        hanging = shadow_info(port, 8)
    # one copy in flight at most, two queued: the other five or more were dropped
    assert hanging["version"] == "v3" and hanging["dropped"] >= 5
    assert hanging["errors"] == hanging["mirrored"] == 8 - hanging["dropped"]
    assert hanging["shadow_latency_ms"]["n"] == 0  # a timeout is no answer


def test_a_new_shadow_resets_the_stats_and_a_removed_one_gets_nothing(routed):
    port = routed.start()
    with httpx.Client() as client:
        routed.route({"v1": 100}, shadow="v2", tolerance=0.05)
        for i in range(3):
            post(client, port, {"rows": [{"x": i}]})
        assert shadow_info(port, 3)["rows_compared"] == 3
        routed.route({"v1": 100}, shadow="v2", tolerance=0.5)  # the same shadow: kept
        assert router_info(port)["shadow"]["mirrored"] == 3
        routed.route({"v1": 100}, shadow="v3")
        fresh = router_info(port)["shadow"]
        assert (fresh["version"], fresh["mirrored"], fresh["rows_compared"]) == ("v3", 0, 0)
        post(client, port, {"rows": [{"x": 9}]})
        assert shadow_info(port, 1)["mirrored"] == 1
        routed.route({"v1": 100})
        for i in range(3):
            post(client, port, {"rows": [{"x": i}]})
        time.sleep(0.3)
        assert router_info(port)["shadow"] is None
    assert len(routed.servers["v2"].seen) == 3 and len(routed.servers["v3"].seen) == 1
    assert len(routed.servers["v1"].seen) == 7  # the shadow got no primary traffic


def test_copies_queued_for_a_replaced_shadow_are_dropped_unsent(routed):
    port = routed.start()
    routed.servers["v3"].hold_s = 30.0  # each copy waits the 1 s timeout: the rest queue up
    routed.route({"v1": 100}, shadow="v3", limits={"backend_timeout_s": 1.0})
    with httpx.Client() as client:
        for i in range(3):
            post(client, port, {"rows": [{"x": i}]})
        wait_until(lambda: routed.servers["v3"].seen, 10, "the first copy sent")
        routed.route({"v1": 100}, shadow="v2", limits={"backend_timeout_s": 1.0})
        post(client, port, {"rows": [{"x": 9}]})
        info = shadow_info(port, 1)
        time.sleep(0.3)  # a queued copy sent to the new shadow would have arrived by now
    assert len(routed.servers["v3"].seen) == 1
    assert [json.loads(body) for _, _, body in routed.servers["v2"].seen] == \
        [{"rows": [{"x": 9}]}]
    assert (info["version"], info["mirrored"], info["errors"]) == ("v2", 1, 0)
    assert router_info(port)["shadow"]["mirrored"] == 1


def test_a_malformed_shadow_or_sticky_entry_keeps_the_last_good_table(routed):
    port = routed.start()
    routed.route({"v1": 100}, shadow="v2")
    good = routed.config.read_text()
    for bad in ({"shadow": {"version": "v3"}}, {"sticky": {"key": "customer_id"}}):
        table = {**json.loads(good), **bad}
        mtime = routed.config.stat().st_mtime_ns
        routed.config.write_text(json.dumps(table))
        os.utime(routed.config, ns=(mtime + 10**9, mtime + 10**9))  # seen as changed, surely
        with httpx.Client() as client:
            assert post(client, port, {"rows": [{"x": 1}]}).headers["x-mlstack-version"] == "v1"
        info = router_info(port)
        assert info["shadow"]["version"] == "v2" and info["sticky"] is None
