"""The error-rate alert fires for real when the backend of a deployed system hangs (issue 19
part 3).

churn as `mlstack init` ships it, with one `monitoring.alerts` webhook pointing at a listener of
this test's own, is deployed; the alerting sidecars (mlstack.ops.local.alerting: a Prometheus
with the serving version's generated rules, an Alertmanager with the generated
alertmanager.yml) are started with sidecars.start_all (left as they are where the deploy
started them). Requests go through the router; the version's whole serve tree is frozen
(SIGSTOP) while they keep coming: a hung backend, which no supervisor or keeper restarts, so
every client gets the router's 504 or 503 (counted by the router's /metrics). The generated
ChurnErrorsBudgetBurn1h (errors above 14.4x the budget over 1h and 5m, `for: 2m`) must fire:
seen in status_report and at the webhook, within generous deadlines. (Stopping the tree
instead is no outage with a keeper at work: it restarts the version, and after a failed
restart stops the router, so clients get refused connections, not 5xx.) Everything the test started is stopped (mlstack down, then by PID and owner marker).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mlstack.frontend.analysis import require_system
from mlstack.ops.local import alerting, procs, services, sidecars
from mlstack.ops.local.state import DeploymentState
from mlstack.ops.paths import ProjectPaths
from tests.engine.deploy_support import (
    change_spec,
    deploy_env,
    run_mlstack,
    stop_everything,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ALERT = "ChurnErrorsBudgetBurn1h"
FIRE_WITHIN_S = 480  # its `for: 2m`, a few scrapes, Alertmanager's group_wait 30 s: margin


def listener() -> ThreadingHTTPServer:
    """A webhook receiver on loopback: `posts` holds each POSTed JSON body."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            server.posts.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.posts = []
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    return server


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("alerts")
    project = root / "churn"
    env = deploy_env(root)
    hook = listener()
    run_mlstack(root, "init", str(project), "--blueprint", "churn", env=env)
    spec = project / "mlstack.yaml"
    url = f"http://127.0.0.1:{hook.server_port}/alerts"
    change_spec(spec, {"monitoring:\n": f"monitoring:\n  alerts:\n    - channel: webhook\n"
                                         f"      to: {url}\n"})
    try:
        run_mlstack(project, "deploy", "--port", str(procs.free_port()), "--no-verify",
                    env=env)
        yield {"project": project, "env": env, "hook": hook, "spec": spec}
    finally:
        stop_everything(project, env)
        hook.shutdown()


def freeze(paths: ProjectPaths, version: str, sig: signal.Signals) -> list[int]:
    """SIGSTOP (or SIGCONT) every process of the version's serve tree, its supervisor too:
    a hung backend, which neither its supervisor nor a keeper restarts while it is frozen
    (both see it alive); its port still takes connections, nothing answers them."""
    pids = [p.pid for p in services.version_tree(paths, version)]
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def firing_at_webhook(posts: list) -> list[dict]:
    return [a for post in posts for a in post.get("alerts", [])
            if a.get("status") == "firing" and a.get("labels", {}).get("alertname") == ALERT]


def test_a_hung_backend_fires_the_error_rate_alert_in_status_and_at_the_webhook(deployed):
    paths = ProjectPaths.for_spec(deployed["spec"])
    system = require_system(deployed["spec"])[0]
    declared = alerting.sidecars(paths, system)
    assert [s.name for s in declared] == ["alertmanager", "exporter", "prometheus"]
    sidecars.start_all(paths, declared)
    state = DeploymentState.load(paths.deployments_file)
    serving = state.get(state.current)
    body = {"rows": serving.example_rows[:1]}
    router = f"http://127.0.0.1:{state.router.port}/predict"

    def drive(seconds: float, clients: int = 1, pause: float = 0.5) -> Counter:
        """Requests through the router from `clients` threads for `seconds`: how many got
        each answer ('refused' where the router took no connection)."""
        until = time.monotonic() + seconds

        def one_client() -> Counter:
            got: Counter = Counter()
            with httpx.Client(timeout=60) as client:
                while time.monotonic() < until:
                    try:
                        got[client.post(router, json=body).status_code] += 1
                    except httpx.TransportError:
                        got["refused"] += 1
                    time.sleep(pause)
            return got

        with ThreadPoolExecutor(clients) as pool:
            return sum(pool.map(lambda _: one_client(), range(clients)), Counter())

    assert drive(1)[200], "the deployed version answers through the router"
    # every target scraped while it serves (the exporter: the monitoring report's gauges),
    # and nothing fires
    deadline = time.monotonic() + 120
    while True:
        drive(2)
        report = alerting.status_report(paths)
        health = {t["job"]: t["health"] for t in report["targets"]}
        if all(health.get(job) == "up" for job in ("router", "service", "exporter")):
            break
        assert time.monotonic() < deadline, report
    assert report["state"] == "up" and report["alerts"] == [], report
    assert report["alertmanager"] is not None

    frozen = freeze(paths, serving.version, signal.SIGSTOP)
    assert frozen
    began = time.monotonic()
    seen_in_status = None
    codes: Counter = Counter()
    try:
        while time.monotonic() - began < FIRE_WITHIN_S:
            codes += drive(10, clients=8, pause=0.1)  # each waits the router's 10 s timeout
            report = alerting.status_report(paths)
            fired = [a for a in report["alerts"] if a["name"] == ALERT]
            if fired and seen_in_status is None:
                seen_in_status = fired[0]
            if seen_in_status and firing_at_webhook(deployed["hook"].posts):
                break
        else:
            raise AssertionError(f"{ALERT} did not fire within {FIRE_WITHIN_S} s: status "
                                 f"{report}, webhook {deployed['hook'].posts}, answers {codes}")
    finally:
        freeze(paths, serving.version, signal.SIGCONT)
    # every client got a 5xx from the router: 504 where it waited out its backend timeout,
    # 503 where v1 took no connection
    assert codes and all(isinstance(c, int) and c >= 500 for c in codes), codes
    assert seen_in_status["severity"] == "page" and seen_in_status["since"]
    assert "errors error budget burning" in seen_in_status["summary"]
    (delivered, *_) = firing_at_webhook(deployed["hook"].posts)
    assert delivered["labels"]["system"] == "churn" and delivered["labels"]["slo"] == "errors"
    print(f"{ALERT} fired {time.monotonic() - began:.0f} s after the backend hung")
