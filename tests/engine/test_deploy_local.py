"""`mlstack deploy` on the local target, end to end, with the real libraries and real HTTP.

One project (the churn blueprint, initialised into a temp folder) goes through a deployment's
life in order: first deploy (SLO report with measured figures, HTTP predictions equal offline
ones), a failing stage while v1 keeps answering, a changed spec deployed beside the old
version with a client polling throughout (zero failed requests), rollback, a deliberately slow
version caught by the canary, redeploys failing on bad data while v1 answers, and `down` (no
process left, checked by PID). Every process a test starts is stopped by the module's
teardown, by PID, whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlstack.ops.local import procs
from tests.engine.deploy_support import (
    deploy_env,
    deploy_state,
    project_processes,
    run_mlstack,
    started_pids,
    stop_everything,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

# churn as `mlstack init` ships it: its SLOs (p99 100 ms at 50 rps, error rate 0.001,
# freshness 1d) and its data, which init dates to the present
ERROR_RATE_SECONDS = 21  # 0.001 is judged from 1,000 requests: 21 s at the spec's 50 rps


OFFLINE_PREDICT = r"""
import json, sys
import bentoml, pandas as pd
tag, project, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = bentoml.sklearn.load_model(tag)
c = pd.read_parquet(f"{project}/data/customers.parquet")
latest = c.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
rows = latest.loc[ids]
X = pd.DataFrame({
    "customer_profile__tenure_months": rows.tenure_months.to_numpy(),
    "customer_profile__monthly_charges": rows.monthly_charges.to_numpy(),
    "customer_profile__support_calls": rows.support_calls.to_numpy(),
    "customer_profile__is_monthly_contract": rows.is_monthly_contract.to_numpy(),
    "charges_per_tenure": (rows.monthly_charges / (rows.tenure_months + 1)).to_numpy(),
})
print(json.dumps(model.predict_proba(X)[:, 1].tolist()))
"""


def mlstack(project: Path, *args: str, env: dict, check: bool = True):
    return run_mlstack(project, *args, env=env, check=check)


def state(project: Path) -> dict:
    return deploy_state(project)


def predict(port: int, rows: list[dict]) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": rows}, timeout=30)


class Poller(threading.Thread):
    """A client that keeps calling /predict through the router and counts failures."""

    def __init__(self, port: int, row: dict):
        super().__init__(daemon=True)
        self.port, self.row = port, row
        self.ok = self.failed = 0
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(f"http://127.0.0.1:{self.port}/predict",
                                    json={"rows": [self.row]})
                    if r.status_code == 200 and r.json()[0] is not None:
                        self.ok += 1
                        self.versions.add(r.headers.get("x-mlstack-version", "?"))
                    else:
                        self.failed += 1
                        self.failures.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failed += 1
                    self.failures.append(repr(exc))
                time.sleep(0.02)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    project = root / "churn"
    env = deploy_env(root)
    port = procs.free_port()
    init = json.loads(mlstack(root, "init", str(project), "--blueprint", "churn", "--format",
                              "json", env=env).stdout)
    assert init["dated_now"] is True, init  # the sample's newest feature row is now
    spec = project / "mlstack.yaml"
    info = {"project": project, "env": env, "port": port, "spec": spec,
            "home": root / "home", "original": spec.read_text()}
    yield info
    stop_everything(project, env)


def test_first_deploy_serves_offline_predictions_and_reports_slos(deployment):
    project, env, port = deployment["project"], deployment["env"], deployment["port"]
    began = time.perf_counter()
    proc = mlstack(project, "deploy", "--json", "--port", str(port), "--duration",
                   str(ERROR_RATE_SECONDS), env=env)
    seconds = time.perf_counter() - began
    result = json.loads(proc.stdout)
    stages = {s["name"]: s["status"] for s in result["stages"]}
    for name in ("compile", "ingest", "validate", "feast_apply", "materialize", "training_set",
                 "train", "evaluate", "register", "start_service", "skew_check", "verify",
                 "rollout", "promote"):
        assert stages[name] == "done", (name, result["stages"])
    assert result["version"] == "v1" and result["model_tag"].startswith("churn:")
    load = result["load"]
    # the spec's 50 rps for 21 s: enough requests to judge its error rate, not only p99
    assert load["requests"] >= 1000 and load["samples"] >= 100 and load["errors"] == 0
    assert load["contention"]["cpus"] >= 1 and "sender_lag_p99_ms" in load["contention"]
    assert 0 < load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"]
    slos = {row["slo"]: row for row in result["slos"]}
    for name in ("latency p50", "latency p95", "latency p99", "throughput", "error rate",
                 "quality auc", "freshness customer_profile"):
        assert slos[name]["ok"] is True, (name, slos[name], load["contention"])
    # freshness: the newest online row's age, under the shipped 1 day (the sample is dated
    # at init, minutes ago)
    assert slos["freshness customer_profile"]["target"] == "<= 1 d", slos
    assert float(slos["quality auc"]["measured"]) == pytest.approx(result["metrics"]["auc"],
                                                                   abs=1e-4)
    assert result["skew"]["mismatches"] == [] and result["skew"]["compared"] > 0
    # real HTTP predictions through the router equal offline predictions of the same model
    ids = [1001, 1500, 2999, 1234]
    served = predict(port, [{"customer_id": i} for i in ids])
    assert served.status_code == 200
    offline = subprocess.run(
        [sys.executable, "-c", OFFLINE_PREDICT, result["model_tag"], str(project),
         json.dumps(ids)], env=dict(env, BENTOML_HOME=str(next(
             (deployment["home"] / ".local/state/mlstack/projects").iterdir()) / "bentoml")),
        capture_output=True, text=True, check=True)
    # ONNX Runtime serves the model: equal to the native one within the parity tolerance
    assert served.json() == pytest.approx(json.loads(offline.stdout), abs=1e-5)
    status = mlstack(project, "status", "--json", env=env)
    report = json.loads(status.stdout)
    assert report["healthy"] is True and report["current"] == "v1"
    assert report["prediction"]["ok"] is True and report["prediction"]["version"] == "v1"
    assert report["problems"] == [] and report["live_routes"] == {"v1": 100}
    assert report["last_slo_report"]["load"]["requests"] == load["requests"]
    deployment["v1_tag"] = result["model_tag"]
    print(f"first deploy took {seconds:.1f} s")


def test_failing_stage_keeps_the_previous_version_serving(deployment):
    project, env, port, spec = (deployment[k] for k in ("project", "env", "port", "spec"))
    original = spec.read_text()
    try:
        spec.write_text(original.replace('gates: {auc: ">= 0.80"}', 'gates: {auc: ">= 0.999"}'))
        proc = mlstack(project, "deploy", "--port", str(port), env=env, check=False)
        assert proc.returncode == 1
        assert "stage 'evaluate' failed: gate auc >= 0.999 failed: auc = 0.8" in proc.stderr
        assert f"failed; v1 serves at http://127.0.0.1:{port}" in proc.stdout, proc.stdout
        spec.write_text(original.replace("ranges: {tenure_months: [0, 600]",
                                         "ranges: {tenure_months: [0, 5]"))
        proc = mlstack(project, "deploy", "--port", str(port), env=env, check=False)
        assert proc.returncode == 1
        assert "stage 'validate' failed: data check failed: source 'customers', column " \
               "'tenure_months'" in proc.stderr
    finally:
        spec.write_text(original)
    answer = predict(port, [{"customer_id": 1001}])
    assert answer.status_code == 200 and answer.headers["x-mlstack-version"] == "v1"
    assert state(project)["current"] == "v1"


def test_unchanged_redeploy_retrains_nothing(deployment):
    project, env, port = deployment["project"], deployment["env"], deployment["port"]
    result = json.loads(mlstack(project, "deploy", "--json", "--port", str(port),
                                env=env).stdout)
    assert result["changed"] is False and result["version"] == "v1"
    assert [s["name"] for s in result["stages"]] == ["compile", "unchanged"]


def test_changed_spec_deploys_beside_the_old_one_without_failed_requests(deployment):
    project, env, port, spec = (deployment[k] for k in ("project", "env", "port", "spec"))
    spec.write_text(spec.read_text().replace("n_estimators: 150", "n_estimators: 120"))
    poller = Poller(port, {"customer_id": 1001})
    poller.start()
    try:
        result = json.loads(mlstack(project, "deploy", "--json", "--port", str(port),
                                    "--duration", "3", env=env).stdout)
    finally:
        time.sleep(0.5)
        poller.stop.set()
        poller.join()
    assert result["version"] == "v4" and result["model_tag"] != deployment["v1_tag"]
    assert [step["weight"] for step in result["rollout"]] == [5, 25, 100]
    # a healthy canary passes each step by judgement: at 5% of the spec's 50 rps the new
    # version answers the 100 requests its p99 and error-rate rules need within the default
    # 60 s step limit, and neither rule is breached
    for step in result["rollout"][:2]:
        assert step["breach"] is None and step["unjudged"] == [], step
        assert step["new"]["requests"] >= 100, step
    assert poller.failed == 0, poller.failures[:5]
    assert poller.ok > 50 and {"v1", "v4"} <= poller.versions
    old = next(v for v in state(project)["versions"] if v["version"] == "v1")
    assert not procs.is_alive(old["pid"])  # the old version stopped after the swap
    # rollback restores the earlier model
    mlstack(project, "rollback", env=env)
    info = httpx.post(f"http://127.0.0.1:{port}/info", json={}, timeout=30).json()
    assert info["model_tag"] == deployment["v1_tag"]
    assert state(project)["current"] == "v1"


def test_slow_canary_is_caught_at_the_first_step_and_rolled_back(deployment):
    project, env, port, spec = (deployment[k] for k in ("project", "env", "port", "spec"))
    text = spec.read_text()
    slow = text.replace("algorithm: gradient_boosting", "algorithm: random_forest").replace(
        "params: {n_estimators: 120, max_depth: 3, learning_rate: 0.1}",
        "params: {n_estimators: 1500, max_depth: 12}").replace(
        'abort_if: {latency_p99_ms: "> 200"', 'abort_if: {latency_p99_ms: "> 60"')
    assert slow != text
    spec.write_text(slow)
    poller = Poller(port, {"customer_id": 1002})
    poller.start()
    try:
        proc = mlstack(project, "deploy", "--json", "--port", str(port), "--no-verify",
                       env=env, check=False)
    finally:
        poller.stop.set()
        poller.join()
    assert proc.returncode == 1
    # caught at the first step: by its p99, or (on a loaded machine) by answering nothing
    # within the load test's timeout
    assert "stage 'rollout' failed: canary step 5%: " in proc.stderr, proc.stderr
    assert "traffic is back on v1" in proc.stderr
    assert poller.failed == 0, poller.failures[:5]
    data = state(project)
    slow_version = data["versions"][-1]
    assert data["current"] == "v1" and slow_version["status"] == "rolled_back"
    assert not procs.is_alive(slow_version["pid"])
    answer = predict(port, [{"customer_id": 1001}])
    assert answer.headers["x-mlstack-version"] == "v1"


def _runtime_state(deployment) -> Path:
    """The generated flows' state folder (training.json, row_prints/) of the project."""
    return deployment["project"] / ".mlstack" / "runtime"


def test_a_redeploy_failing_on_data_keeps_the_previous_version_serving(deployment):
    """Issue 26's data contract on a deployed system: the last successful training reported
    each source's rows changed since the one before (v5 on v4's data: none); then a source
    written with monthly_charges as strings fails at ingest, and the same source stale and out
    of time order (with monotonic and freshness declared) fails at validate, each naming
    source, column and counts, exit 1, while v1 answers through the router all along and
    status stays healthy. The row fingerprints of the last successful training stay as they
    were; the data and spec are restored for the tests after this one."""
    import pandas as pd

    project, env, port, spec = (deployment[k] for k in ("project", "env", "port", "spec"))
    runtime = _runtime_state(deployment)
    report = json.loads((runtime / "training.json").read_text())
    data = project / "data" / "customers.parquet"
    rows = len(pd.read_parquet(data))
    assert report["status"] == "completed", report
    assert report["changes"]["customers"] == {"rows": rows, "previous_rows": rows, "added": 0,
                                              "removed": 0, "changed": 0, "share": 0.0}
    assert report["changes"]["churn_labels"]["share"] == 0.0, report["changes"]
    prints = runtime / "row_prints" / "customers.parquet"
    kept = prints.read_bytes()
    original_data, original_spec = data.read_bytes(), spec.read_text()
    frame = pd.read_parquet(data)
    poller = Poller(port, {"customer_id": 1001})
    poller.start()
    try:
        frame.assign(monthly_charges=frame["monthly_charges"].map(lambda v: f"{v:.2f} USD")
                     ).to_parquet(data, index=False)
        typed = mlstack(project, "deploy", "--port", str(port), env=env, check=False)
        # the same source out of time order for one customer and 60 days old
        spec.write_text(original_spec.replace(
            "      min_rows: 1000\n",
            "      min_rows: 1000\n      monotonic: [customer_id]\n      freshness: true\n", 1))
        assert spec.read_text() != original_spec
        first, last = frame.index[frame["customer_id"] == 1001][[0, -1]]
        stale = frame.copy()
        stale.loc[[first, last], "event_timestamp"] = \
            stale.loc[[last, first], "event_timestamp"].to_numpy()
        stale["event_timestamp"] = stale["event_timestamp"] - pd.Timedelta(days=60)
        stale.to_parquet(data, index=False)
        late = mlstack(project, "deploy", "--port", str(port), env=env, check=False)
        status = json.loads(mlstack(project, "status", "--json", env=env).stdout)
    finally:
        data.write_bytes(original_data)
        spec.write_text(original_spec)
        time.sleep(0.5)
        poller.stop.set()
        poller.join()
    assert typed.returncode == 1, typed.stdout
    assert ("stage 'ingest' failed: data check failed: source 'customers', file "
            "data/customers.parquet, column 'monthly_charges', dtype: declared float64, found "
            "string, e.g. '") in typed.stderr, typed.stderr
    assert f"failed; v1 serves at http://127.0.0.1:{port}" in typed.stdout, typed.stdout
    assert late.returncode == 1, late.stdout
    assert ("stage 'validate' failed: data check failed: source 'customers', column "
            f"'event_timestamp', monotonic per customer_id: 2 of {rows} rows are earlier than "
            "the row before them of the same key, e.g. customer_id 1001") in late.stderr, \
        late.stderr
    assert ("data check failed: source 'customers', column 'event_timestamp', freshness "
            f"(view 'customer_profile', ttl 45d): the newest of {rows} rows (") in late.stderr
    assert f"failed; v1 serves at http://127.0.0.1:{port}" in late.stdout, late.stdout
    # v1 answered throughout, and serves after both
    assert poller.failed == 0, poller.failures[:5]
    assert poller.ok > 0 and poller.versions == {"v1"}, poller.versions
    assert status["healthy"] is True and status["current"] == "v1", status
    answer = predict(port, [{"customer_id": 1001}])
    assert answer.status_code == 200 and answer.headers["x-mlstack-version"] == "v1"
    assert state(project)["current"] == "v1"
    assert prints.read_bytes() == kept  # a failed training records no fingerprints


CANARY = "    strategy: canary\n    steps: [5, 25, 100]\n"


def _serving_change(text: str, timeout_ms: int, rollout: str) -> str:
    """The spec v1 was deployed with, its service changed (a timeout: a new version that
    reuses v1's model) and rolled out by `rollout`."""
    changed = text.replace(CANARY, rollout).replace(
        "  batching: auto\n", f"  batching: auto\n  timeout_ms: {timeout_ms}\n")
    assert changed.count("timeout_ms") == 1 and rollout in changed
    return changed


def test_a_shadow_is_compared_then_an_ab_experiment_promotes_the_better_arm(deployment):
    """A shadowed version answers a mirrored copy of the traffic and is promoted on its
    agreement (the same model: every answer agrees); then an A/B experiment splits the
    customers stickily, clients send outcomes back (the candidate converts better) and the
    keeper promotes it by the readout; garbage feedback gets 4xx and loses nothing. Last, a
    canary held on feedback converts worse and the keeper rolls it back."""
    project, env, port, spec = (deployment[k] for k in ("project", "env", "port", "spec"))
    assert state(project)["current"] == "v1"
    spec.write_text(_serving_change(deployment["original"], 1500, (
        "    strategy: shadow\n"
        "    shadow: {min_agreement: '>= 0.99', tolerance: 0.000001, min_requests: 100}\n")))
    result = json.loads(mlstack(project, "deploy", "--json", "--port", str(port),
                                "--no-verify", env=env).stdout)
    shadow_version = result["version"]
    [step] = result["rollout"]
    stats = step["shadow"]
    assert step["strategy"] == "shadow" and step["against"] == "v1" and step["breach"] is None
    # min_requests 100: the shadow's p99 is judged (it needs 100 answers), not left open
    assert stats["mirrored"] >= 100 and stats["errors"] == 0, stats
    assert stats["agreement"] == 1.0 and stats["max_abs_diff"] < 1e-6, stats
    assert stats["shadow_latency_ms"]["n"] >= 100 and stats["shadow_latency_ms"]["p99"] > 0
    assert [v["ok"] for v in step["verdicts"]] == [True, True, True, True], step["verdicts"]
    data = state(project)
    assert data["current"] == shadow_version and data["routes"] == {shadow_version: 100}
    [compared] = [e for e in data["history"] if e["event"] == "shadow-compared"]
    assert compared["shadow"]["agreement"] == 1.0 and compared["shadow"]["verdict"] == "promoted"
    assert predict(port, [{"customer_id": 1001}]).headers["x-mlstack-version"] == \
        shadow_version

    spec.write_text(_serving_change(deployment["original"], 1400, (
        "    strategy: ab\n"
        "    ab: {baseline: 0.3, minimum_lift: 0.3, min_samples: 120, split: 50}\n")))
    result = json.loads(mlstack(project, "deploy", "--json", "--port", str(port),
                                "--no-verify", env=env).stdout)
    candidate = result["version"]
    [step] = result["rollout"]
    assert (step["strategy"], step["control"], step["key"]) == ("ab", shadow_version,
                                                                "customer_id")
    data = state(project)
    assert data["current"] == shadow_version and data["experiment"]["status"] == "running"
    assert data["routes"] == {shadow_version: 50, candidate: 50}

    # clients: 320 customers twice each (sticky: the same arm both times); then the outcomes
    # come back, the candidate's customers converting at 60%, the control's at 25%
    import random
    rng = random.Random(5)
    arms: dict[int, str] = {}
    answered: list[tuple[str, str]] = []
    with httpx.Client(timeout=30) as client:
        for _ in range(2):
            for customer in range(1001, 1321):
                answer = client.post(f"http://127.0.0.1:{port}/predict",
                                     json={"rows": [{"customer_id": customer}]})
                assert answer.status_code == 200, answer.text
                arm = answer.headers["x-mlstack-version"]
                assert arms.setdefault(customer, arm) == arm  # sticky
                answered.append((answer.headers["x-request-id"], arm))
        share = sum(arm == candidate for arm in arms.values()) / len(arms)
        assert 0.35 < share < 0.65, share
        for request_id, arm in answered:
            outcome = int(rng.random() < (0.6 if arm == candidate else 0.25))
            sent = client.post(f"http://127.0.0.1:{port}/feedback",
                               json={"request_id": request_id, "outcome": outcome})
            assert sent.status_code == 201, sent.text
        # the same again is idempotent; garbage gets 4xx and loses nothing
        again = client.post(f"http://127.0.0.1:{port}/feedback",
                            json={"request_id": request_id, "outcome": outcome})
        assert again.status_code == 200, again.text
        for body in ({"request_id": "0" * 32, "outcome": 1},
                     {"request_id": request_id, "outcome": [1]},
                     {"request_id": 5, "outcome": 1}, {"outcome": 1}):
            got = client.post(f"http://127.0.0.1:{port}/feedback", json=body)
            assert 400 <= got.status_code < 500, (body, got.status_code, got.text)
        huge = client.post(f"http://127.0.0.1:{port}/feedback", content=b"{" + b" " * (10 << 20),
                           headers={"Content-Type": "application/json"})
        assert huge.status_code == 413, huge.text

    deadline = time.monotonic() + 120  # the keeper looks every 5 s
    while time.monotonic() < deadline and state(project)["experiment"]["status"] == "running":
        time.sleep(1)
    data = state(project)
    trial = data["experiment"]
    assert (trial["status"], trial["outcome"]) == ("ended", "promote"), trial
    readout = trial["readout"]
    counted = readout["arms"][candidate]["n"] + readout["arms"][shadow_version]["n"]
    assert 240 <= counted <= 640, readout["arms"]  # decided once both arms had 120
    assert readout["effect"] > 0 and readout["effect_low"] > 0 and readout["p_value"] < 0.05
    assert data["current"] == candidate and data["routes"] == {candidate: 100}
    assert predict(port, [{"customer_id": 1001}]).headers["x-mlstack-version"] == candidate
    status = json.loads(mlstack(project, "status", "--format", "json", env=env,
                                check=False).stdout)
    assert status["experiment"]["outcome"] == "promote"
    # nothing lost: each of the 640 outcomes stored once, none of the garbage
    assert status["living"]["prediction_log"]["feedback"] == 640, status["living"]
    text = mlstack(project, "status", env=env, check=False).stdout
    assert f"A/B experiment {trial['name']}: ended (promote: " in text, text

    # a canary held on feedback (rollout.feedback): its 20% step passes on latency and
    # errors, then stays held; its requests convert at 10% against the serving version's 50%,
    # and the keeper's look rolls it back by the same always-valid test
    serving = candidate
    spec.write_text(_serving_change(deployment["original"], 1300, (
        "    strategy: canary\n    steps: [20, 100]\n"
        "    feedback: {baseline: 0.3, minimum_lift: 0.3, min_samples: 60}\n")))
    result = json.loads(mlstack(project, "deploy", "--json", "--port", str(port),
                                "--no-verify", env=env).stdout)
    canary = result["version"]
    held = result["rollout"][-1]
    assert (held["held"], held["control"]) == (20, serving), result["rollout"]
    data = state(project)
    assert data["current"] == serving and data["experiment"]["kind"] == "canary"
    assert data["routes"] == {serving: 80, canary: 20}
    answered = []
    with httpx.Client(timeout=30) as client:
        while sum(arm == canary for _, arm in answered) < 80:
            answer = client.post(f"http://127.0.0.1:{port}/predict",
                                 json={"rows": [{"customer_id": 1001 + len(answered) % 300}]})
            assert answer.status_code == 200, answer.text
            answered.append((answer.headers["x-request-id"], answer.headers["x-mlstack-version"]))
            assert len(answered) < 2000, "the canary took no share of the requests"
        for request_id, arm in answered:
            outcome = int(rng.random() < (0.1 if arm == canary else 0.5))
            sent = client.post(f"http://127.0.0.1:{port}/feedback",
                               json={"request_id": request_id, "outcome": outcome})
            assert sent.status_code == 201, sent.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and state(project)["experiment"]["status"] == "running":
        time.sleep(1)
    data = state(project)
    trial = data["experiment"]
    assert (trial["kind"], trial["status"], trial["outcome"]) == ("canary", "ended", "abort"), \
        trial
    assert trial["readout"]["effect"] < 0 and trial["readout"]["effect_high"] < 0
    assert data["current"] == serving and data["routes"] == {serving: 100}

    def canary_status():  # the decision is saved first, then the canary stops
        return next(v for v in state(project)["versions"] if v["version"] == canary)["status"]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and canary_status() != "rolled_back":
        time.sleep(0.5)
    assert canary_status() == "rolled_back"
    text = mlstack(project, "status", env=env, check=False).stdout
    assert f"canary feedback guard {trial['name']}: ended (abort: " in text, text
    spec.write_text(deployment["original"])


def test_down_stops_every_process(deployment):
    project, env = deployment["project"], deployment["env"]
    pids = started_pids(project)
    assert any(procs.is_alive(pid) for pid in pids)
    assert project_processes(project)
    mlstack(project, "down", env=env)
    assert [pid for pid in pids if procs.is_alive(pid)] == []
    assert project_processes(project) == []  # by marker: BentoML's workers too
    assert mlstack(project, "status", env=env, check=False).returncode == 1
    # a deploy failing now says what is true: nothing serves (v1 is recorded, not running)
    spec = deployment["spec"]
    original = spec.read_text()
    try:
        spec.write_text(original.replace("ranges: {tenure_months: [0, 600]",
                                         "ranges: {tenure_months: [0, 5]"))
        proc = mlstack(project, "deploy", "--port", str(deployment["port"]), env=env,
                       check=False)
    finally:
        spec.write_text(original)
    assert proc.returncode == 1 and "stage 'validate' failed" in proc.stderr
    assert "failed; no version serves at" in proc.stdout, proc.stdout
    mlstack(project, "down", env=env)
    # under the user's home, only mlstack's own state folder was written
    home = deployment["home"]
    written = {p.relative_to(home).as_posix() for p in home.rglob("*")
               if not p.relative_to(home).as_posix().startswith(".local/state/mlstack/")}
    assert written <= {".local", ".local/state", ".local/state/mlstack"}, sorted(written)[:10]
