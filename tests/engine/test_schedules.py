"""The schedules run locally on Prefect's own machinery (issue 19), with the real server.

One churn project, initialised and deployed, with a test spec of short schedules: the
feature freshness SLO at 2 minutes (so materialize and monitoring run every 60 s, derived)
and the daily retrain moved to 12 hours from now (so it never runs here). The project's
keeper is stopped: the test drives the supervision itself (sidecars.ensure). Then, in order:

1. the Prefect server is ready, its UI answers, and the deployments carry the spec's
   schedules (60 s intervals, the training cron in UTC);
2. a scheduled materialize run completes with no command, and status_report shows each
   deployment's last run (state, start, duration) and next run;
3. the server and the runner killed with SIGKILL are restarted by sidecars.ensure; every
   scheduled slot (60 s apart) from the first on has exactly one run, none left waiting:
   no run lost, none run twice;
4. `mlstack run materialize` creates a run on the server and follows it (states, tasks),
   exit 0; with a source file gone it fails with exit 1, the failed stage named;
5. rows `mlstack run feed` appends are served, with no command, within two intervals (the
   scheduled materialize);
6. `mlstack run monitoring` runs now and judges what serves: the journal's serving version
   and its model, feature freshness read from the online store (the fed rows' age, judged
   against the 2-minute SLO), shown by `mlstack status --json` and the report `mlstack docs`
   builds;
7. `mlstack run training` on the changed data runs the training deployment on the server
   (the scheduled retrain: deploy's stages, unattended) and v2 rolls out through the canary,
   the journal naming the trigger "schedule"; once more on the same data it makes no version;
8. the error-rate alert fires for real when the serving version hangs: in status and at the
   spec's webhook.

One deploy serves all of them (CI time: each deploy is a minute on two shared cores).
Everything is stopped by the module's teardown (`mlstack down`, then by marker).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mlstack.frontend.analysis import require_system
from mlstack.ops.local import alerting, keeper, procs, scheduler, services, sidecars
from mlstack.ops.local.state import DeploymentState
from mlstack.ops.paths import ProjectPaths
from tests.engine.deploy_support import (
    STATE_VARIABLES,
    adjust_slos,
    change_spec,
    deploy_env,
    deploy_state,
    run_mlstack,
    stop_everything,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

INTERVAL = 60  # seconds: half the 2-minute freshness SLO
RUN_DEADLINE = 300.0  # a scheduled run on a busy 2-core machine (materialize: ~40-60 s)
RESTART_DEADLINE = 240.0
PICKUP_GRACE = 90.0  # a slot older than this must have been taken by the runner


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedules")
    folder = root / "churn"
    env = deploy_env(root)
    run_mlstack(root, "init", str(folder), "--blueprint", "churn", "--format", "json",
                env=env)
    spec = folder / "mlstack.yaml"
    adjust_slos(spec, {"feature_freshness: 1d": "feature_freshness: 2m"},
                "materialize and monitoring every minute (half the SLO), so scheduled runs "
                "happen within the test")
    adjust_slos(spec, {
        "latency: {p50_ms: 25, p95_ms: 60, p99_ms: 100}":
            "latency: {p50_ms: 500, p95_ms: 1000, p99_ms: 2000}",
        "throughput_rps: 50": "throughput_rps: 10"},
        "the retrain's rollout is judged here for its path through the stages, not for the "
        "latency of a machine shared with other test runs")
    hour = (datetime.now(UTC).hour + 12) % 24
    change_spec(spec, {'schedule: "@daily"': f'schedule: "0 {hour} * * *"'})
    hook = listener()  # the alerts' webhook (test 8)
    change_spec(spec, {"monitoring:\n": "monitoring:\n  alerts:\n    - channel: webhook\n"
                                         f"      to: http://127.0.0.1:{hook.server_port}/alerts\n"})
    with pytest.MonkeyPatch.context() as patch:
        # this process declares the sidecars as deploy did: the same homes and PYTHONPATH
        patch.setenv("HOME", env["HOME"])
        patch.setenv("PYTHONPATH", env["PYTHONPATH"])
        for name in STATE_VARIABLES:
            patch.delenv(name, raising=False)
        try:
            # the SLOs are not this test's: a busy machine misses the latency ones
            deploy = run_mlstack(folder, "deploy", "--port", str(procs.free_port()),
                                 "--no-verify", env=env, check=False)
            journal = deploy_state(folder)
            assert journal.get("current"), f"nothing serves:\n{deploy.stdout}{deploy.stderr}"
            paths = ProjectPaths.for_spec(spec)
            keeper.stop(paths)  # the test is the keeper here
            from mlstack.frontend.analysis import analyze_spec

            system = analyze_spec(paths.spec).system
            declared = sidecars.declared(paths, system, providers=(scheduler.__name__,))
            sidecars.start_all(paths, declared)
            yield {"folder": folder, "env": env, "paths": paths, "declared": declared,
                   "hour": hour, "base": scheduler.server_url(paths), "hook": hook,
                   "spec": spec}
        finally:
            stop_everything(folder, env)
            hook.shutdown()


def _deployments(base: str) -> dict[str, dict]:
    return {d["name"]: d for d in scheduler.deployments(base)}


def _auto_runs(base: str, deployment_id: str, before: datetime) -> list[dict]:
    runs = scheduler.api(base, "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"expected_start_time": {"before_": before.isoformat()}},
        "sort": "EXPECTED_START_TIME_ASC", "limit": 200})
    return [r for r in runs if r.get("auto_scheduled")]


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _wait(what: str, check, deadline: float, every: float = 2.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {deadline:g} s")


def test_the_server_answers_and_the_deployments_carry_the_specs_schedules(project):
    base, paths = project["base"], project["paths"]
    assert base == f"http://127.0.0.1:{sidecars.port_for(paths, 'prefect-server')}"
    assert procs.http_status(base + "/api/health") == 200
    assert procs.http_status(base + "/") == 200  # the UI
    assert scheduler.database_file(paths).is_file()  # in the project's state
    names = {"churn-materialize", "churn-monitoring", "churn-training"}
    # the runner registers them once its child has read the flows (seconds, more when busy)
    found = _wait("the runner registered the deployments",
                  lambda: (lambda d: d if set(d) == names else None)(_deployments(base)),
                  RUN_DEADLINE)
    for name in ("churn-materialize", "churn-monitoring"):
        [schedule] = [s["schedule"] for s in found[name]["schedules"]]
        assert schedule["interval"] == INTERVAL, (name, schedule)
    [training] = [s["schedule"] for s in found["churn-training"]["schedules"]]
    assert (training["cron"], training["timezone"]) == (f"0 {project['hour']} * * *", "UTC")


def test_a_scheduled_materialize_run_completes_and_status_shows_it(project):
    base, paths = project["base"], project["paths"]
    materialize = _deployments(base)["churn-materialize"]

    def completed():
        return [r for r in _auto_runs(base, materialize["id"], datetime.now(UTC))
                if r["state"]["type"] == "COMPLETED"]

    _wait("a scheduled materialize run completed", completed, RUN_DEADLINE)

    def reported():
        report = scheduler.status_report(paths)
        row = next(d for d in report["deployments"] if d["name"] == "churn-materialize")
        return (report, row) if (row["last_run"] or {}).get("state") == "Completed" else None

    report, row = _wait("status shows the completed run last", reported, RUN_DEADLINE)
    assert report["server"] == "ready" and report["ui"] == base
    assert row["schedules"] == [f"every {INTERVAL} s"]
    assert row["last_run"]["seconds"] > 0 and _parse(row["last_run"]["start"])
    assert row["next_run"]["state"] in ("Scheduled", "Late")
    assert _parse(row["next_run"]["at"]) > _parse(row["last_run"]["start"])
    training = next(d for d in report["deployments"] if d["name"] == "churn-training")
    assert training["schedules"] == [f"cron 0 {project['hour']} * * * (UTC)"]
    assert training["last_run"] is None and training["next_run"] is not None


def test_killed_server_and_runner_come_back_and_no_slot_is_lost_or_run_twice(project):
    base, paths, declared = project["base"], project["paths"], project["declared"]
    before = {name: sidecars.record(paths, name)["pid"]
              for name in ("prefect-server", "prefect-runner")}
    killed_at = datetime.now(UTC)
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)

    def restarted():
        sidecars.ensure(paths, declared)
        now = {name: sidecars.record(paths, name).get("pid") for name in before}
        return all(now[n] != before[n] and sidecars.running(paths, n) for n in before) \
            and sidecars.healthy(declared[0]) and now

    after = _wait("ensure restarted the server and the runner", restarted, RESTART_DEADLINE)
    assert sidecars.record(paths, "prefect-server")["port"] == declared[0].port
    assert "it was not running" in sidecars.record(paths, "prefect-runner")["reason"]
    ids = {name: d["id"] for name, d in _deployments(base).items()}

    def ran_after_the_kill():
        runs = _auto_runs(base, ids["churn-materialize"], datetime.now(UTC))
        return [r for r in runs if _parse(r["expected_start_time"]) > killed_at
                and r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]

    _wait("a run scheduled after the kill finished", ran_after_the_kill, RUN_DEADLINE)
    # judge the slots up to one at least an interval after the kill, each older than the
    # grace a runner has to take it
    judged = killed_at + timedelta(seconds=INTERVAL + PICKUP_GRACE + 5)
    time.sleep(max(0.0, (judged - datetime.now(UTC)).total_seconds()))
    cutoff = datetime.now(UTC) - timedelta(seconds=PICKUP_GRACE)
    for name in ("churn-materialize", "churn-monitoring"):
        runs = _auto_runs(base, ids[name], cutoff)
        slots = Counter(r["expected_start_time"] for r in runs)
        assert slots and max(slots.values()) == 1, (name, slots)  # none run twice
        times = sorted(_parse(t) for t in slots)
        gaps = [(a, b) for a, b in zip(times, times[1:], strict=False)
                if (b - a).total_seconds() != INTERVAL]
        assert gaps == [], (name, gaps)  # no slot missing between the first and the last
        assert times[0] < killed_at < times[-1]
        waiting = [r["expected_start_time"] for r in runs if r["state"]["type"] == "SCHEDULED"]
        assert waiting == [], (name, waiting)  # none left behind (lost)
    assert after  # the PIDs the supervision started


def test_mlstack_run_goes_through_the_server_and_a_failure_exits_1(project):
    folder, env, base = project["folder"], project["env"], project["base"]
    proc = run_mlstack(folder, "run", "materialize", env=env)
    assert "  run scheduled" in proc.stderr and "  run running" in proc.stderr, proc.stderr
    assert "  materialize  done" in proc.stderr and "  run completed" in proc.stderr
    assert "materialize completed in" in proc.stdout
    assert f"the run in the Prefect UI: {base}/runs/flow-run/" in proc.stdout
    source = folder / "data" / "customers.parquet"
    aside = source.with_suffix(".aside")
    source.rename(aside)
    try:
        failed = run_mlstack(folder, "run", "materialize", env=env, check=False)
    finally:
        aside.rename(source)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: stage 'materialize' failed: FAILED" in failed.stderr, failed.stderr
    assert "customers.parquet" in failed.stderr, failed.stderr
    assert "the run in the Prefect UI" in failed.stderr


def _served_charges(port: int, customer: int) -> float | None:
    status, body = procs.http_post_json(f"http://127.0.0.1:{port}/features",
                                        {"rows": [{"customer_id": customer}]})
    if status != 200 or not isinstance(body, list) or not body:
        return None
    return next((v for k, v in body[0].items() if k.endswith("monthly_charges")), None)


def test_fed_rows_are_served_with_no_command(project):
    import pandas as pd

    folder, env = project["folder"], project["env"]
    feed = run_mlstack(folder, "run", "feed", "--once", "--seed", "7", env=env)
    rows = pd.read_parquet(folder / "data" / "customers.parquet")
    fed = rows[rows["event_timestamp"] == rows["event_timestamp"].max()]
    assert len(fed) > 0, feed.stdout
    customer, charges = int(fed.iloc[0]["customer_id"]), float(fed.iloc[0]["monthly_charges"])
    port = deploy_state(folder)["router"]["port"]
    before = _served_charges(port, customer)
    assert before is not None and abs(before - charges) > 1e-9, (before, charges)
    served = _wait("the fed row served", lambda: (
        (v := _served_charges(port, customer)) is not None and abs(v - charges) < 1e-6),
        2 * INTERVAL + RUN_DEADLINE, every=5.0)
    assert served


def test_monitoring_runs_now_and_judges_what_serves(project):
    import pandas as pd

    folder, env = project["folder"], project["env"]
    journal = deploy_state(folder)
    current = next(v for v in journal["versions"] if v["version"] == journal["current"])
    version, tag = current["version"], current["model_tag"]
    customers = pd.read_parquet(folder / "data" / "customers.parquet")
    newest = customers["event_timestamp"].max()
    # the loop closed: 40 answers through the router, logged by the service, and their
    # outcomes sent back by request id, the opposite of what the model said (the half it
    # scored lowest churned): live AUC 0, on evidence, so the monitoring run alerts
    port = journal["router"]["port"]
    answers = []
    for customer in sorted(customers["customer_id"].unique())[:40]:
        with httpx.Client(timeout=30) as client:
            r = client.post(f"http://127.0.0.1:{port}/predict",
                            json={"rows": [{"customer_id": int(customer)}]})
        assert r.status_code == 200 and r.json()[0] is not None, r.text
        answers.append((r.json()[0], r.headers["x-request-id"]))
    answers.sort()
    for rank, (_score, request_id) in enumerate(answers):
        sent = httpx.post(f"http://127.0.0.1:{port}/feedback", timeout=30,
                          json={"request_id": request_id, "outcome": int(rank < 20)})
        assert sent.status_code == 201, sent.text
    # one request of 120 more rows: the log then holds enough served rows (100) in its
    # window for drift to be judged on what served rather than on the online store
    batch = [{"customer_id": int(c)} for c in sorted(customers["customer_id"].unique())[40:160]]
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": batch}, timeout=60)
    assert r.status_code == 200 and len(r.json()) == len(batch) == 120, r.text
    time.sleep(3)  # the writers flush every 2 s
    began = time.time()
    proc = run_mlstack(folder, "run", "monitoring", env=env)
    ended = time.time()
    for task in ("ingest", "drift", "freshness", "staleness"):
        assert f"  {task}" in proc.stderr, proc.stderr  # each task as it finished
    assert f"(serving {version}, model {tag})" in proc.stdout, proc.stdout

    status = json.loads(run_mlstack(folder, "status", "--format", "json", env=env).stdout)
    report = status["monitoring"]
    assert report["serving"] == {"version": version, "model_tag": tag, "from": "deploy"}
    assert report["staleness"]["model_tag"] == tag and report["staleness"]["stale"] is False
    fresh = report["freshness"]
    assert fresh["read_from"] == "online store"
    source = fresh["sources"]["customers"]
    # the age of the newest row the online store serves: the fed rows (test 5), read when
    # the run judged it
    newest_s = newest.timestamp()
    assert began - newest_s - 5 <= source["age_seconds"] <= ended - newest_s + 5, (
        source, newest)
    assert source["fresh"] is (source["age_seconds"] <= 2 * INTERVAL), source
    assert set(source["views"]) == {"customer_profile"}
    # drift judged on the prediction log: the model inputs served (160 rows sent here, and
    # any earlier answers of the window) against the training set, with both sides'
    # histograms on shared bins and their statistics
    drift = report["drift"]
    assert drift["source"] == "prediction_log", drift
    served_rows = drift["served"]["rows"]
    assert drift["served"]["enough"] and served_rows >= 160, drift["served"]
    watched = set(drift["features"])
    assert watched and set(drift["histograms"]) == set(drift["statistics"]) == watched
    for column, bins in drift["histograms"].items():
        found = drift["features"][column]
        assert found["drifted"] == (found["statistic"] > drift["threshold"]), (column, found)
        assert len(bins["edges"]) >= 2 and bins["edges"] == sorted(bins["edges"]), column
        assert sum(bins["current"]["counts"]) + bins["current"]["nulls"] == served_rows
        assert sum(bins["current"]["counts"]) == found["rows"], (column, bins, found)
        assert drift["statistics"][column]["current"]["rows"] == served_rows
    assert sorted(drift["drifted"]) == sorted(
        c for c, f in drift["features"].items() if f["drifted"])
    live = report["live_quality"]
    # the 40 outcomes sent back, and any the label source gave the deploy's own answers
    assert live["enabled"] and live["from_feedback"] == 40, live
    served = live["quality"]["versions"][version]
    assert served["n"] == live["from_feedback"] + live["from_labels"], (served, live)
    auc = served["metrics"]["auc"]
    assert auc["high"] < 0.8 and auc["value"] < 0.5, auc  # the model's ranking, reversed
    assert [(j["version"], j["metric"], j["status"]) for j in live["judged"]] == [
        (version, "auc", "missed")]
    assert any(a.startswith(f"live auc of {version} is ") and "misses slos.quality" in a
               for a in report["alerts"]), report
    status_text = run_mlstack(folder, "status", env=env, check=False).stdout
    assert "prediction log:" in status_text and "feedback: 40 outcomes stored" in status_text

    run_mlstack(folder, "docs", env=env)
    page = (folder / "build" / "docs" / "monitoring.html").read_text()
    assert tag in page and "Read from the online store." in page
    assert "Judged on the prediction log: " in page
    assert page.count('class="chart drift-histogram"') == len(watched)
    # each run a point of live quality over time (the scheduled runs before this one too)
    history = [json.loads(line) for line in (
        folder / ".mlstack" / "runtime" / "monitoring_history.jsonl").read_text().splitlines()]
    assert history[-1]["checked_at"] == report["checked_at"]
    assert history[-1]["versions"][version]["metrics"]["auc"] == auc
    assert "Live quality over time" in page and 'class="chart quality-history"' in page
    assert f"<td><code>{version}</code></td><td>auc &gt;= 0.8</td>" in page


def test_mlstack_run_training_rolls_the_new_data_out_and_unchanged_data_makes_no_version(
        project):
    folder, env = project["folder"], project["env"]
    assert deploy_state(folder)["current"] == "v1"  # the feed above changed the data
    proc = run_mlstack(folder, "run", "training", env=env, timeout=1500)
    assert "  run completed" in proc.stderr, proc.stdout + proc.stderr
    state = deploy_state(folder)
    assert state["current"] == "v2" and state["previous"] == "v1", state["history"][-5:]
    events = [(e["event"], e.get("version"), e.get("trigger")) for e in state["history"]]
    assert ("deploy-started", "v2", "schedule") in events
    assert ("deploy-succeeded", "v2", "schedule") in events
    succeeded = next(e for e in state["history"] if e["event"] == "deploy-succeeded"
                     and e.get("version") == "v2")
    assert succeeded.get("rollout") == [5, 25, 100], succeeded  # the canary's steps
    status = run_mlstack(folder, "status", env=env, check=False)
    assert "last scheduled retrain: deploy-succeeded v2" in status.stdout, status.stdout

    again = run_mlstack(folder, "run", "training", env=env, timeout=900)
    assert "  run completed" in again.stderr, again.stdout + again.stderr
    state = deploy_state(folder)
    assert [v["version"] for v in state["versions"]] == ["v1", "v2"]
    assert state["history"][-1]["event"] == "retrain-skipped", state["history"][-3:]


# -- 8. the error-rate alert, on the same deployment (last: it hangs the serving version) --
#
# The spec's one monitoring.alerts webhook points at this module's listener. The alerting
# sidecars (mlstack.ops.local.alerting: a Prometheus with the serving version's generated
# rules, an Alertmanager with the generated alertmanager.yml) are started with
# sidecars.start_all. Requests go through the router; the version's whole serve tree is frozen
# (SIGSTOP) while they keep coming: a hung backend, which no supervisor or keeper restarts, so
# every client gets the router's 504 or 503 (counted by the router's /metrics). The generated
# ChurnErrorsBudgetBurn1h (errors above 14.4x the budget over 1h and 5m, `for: 2m`) must fire:
# seen in status_report and at the webhook, within generous deadlines. (Stopping the tree
# instead is no outage with a keeper at work: it restarts the version, and after a failed
# restart stops the router, so clients get refused connections, not 5xx.)

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


def test_a_hung_backend_fires_the_error_rate_alert_in_status_and_at_the_webhook(project):
    paths = ProjectPaths.for_spec(project["spec"])
    system = require_system(project["spec"])[0]
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
    # and nothing fires but the live-quality alert test 6 caused on purpose (outcomes the
    # opposite of the model's: its `for: 5m` has passed or not, by how busy the machine was)
    deadline = time.monotonic() + 120
    while True:
        drive(2)
        report = alerting.status_report(paths)
        health = {t["job"]: t["health"] for t in report["targets"]}
        if all(health.get(job) == "up" for job in ("router", "service", "exporter")):
            break
        assert time.monotonic() < deadline, report
    assert report["state"] == "up", report
    assert {a["name"] for a in report["alerts"]} <= {"ChurnLiveQualityMissed"}, report
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
            if seen_in_status and firing_at_webhook(project["hook"].posts):
                break
        else:
            raise AssertionError(f"{ALERT} did not fire within {FIRE_WITHIN_S} s: status "
                                 f"{report}, webhook {project['hook'].posts}, answers {codes}")
    finally:
        freeze(paths, serving.version, signal.SIGCONT)
    # every client got a 5xx from the router: 504 where it waited out its backend timeout,
    # 503 where v1 took no connection
    assert codes and all(isinstance(c, int) and c >= 500 for c in codes), codes
    assert seen_in_status["severity"] == "page" and seen_in_status["since"]
    assert "errors error budget burning" in seen_in_status["summary"]
    (delivered, *_) = firing_at_webhook(project["hook"].posts)
    assert delivered["labels"]["system"] == "churn" and delivered["labels"]["slo"] == "errors"
    print(f"{ALERT} fired {time.monotonic() - began:.0f} s after the backend hung")
