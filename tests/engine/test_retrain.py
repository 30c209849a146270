"""A scheduled retrain (mlstack.ops.local.retrain) on a deployed project, for real: churn is
deployed once, rows are appended to its source data, and retrain() (what the scheduled
training flow calls) rolls v2 out through the canary, recorded in the journal with the
trigger "schedule"; a second retrain on the same data makes no version. Everything the test
starts is stopped by `mlstack down`, then by PID and owner marker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.ops.local import procs
from tests.engine.deploy_support import (
    adjust_slos,
    deploy_env,
    deploy_state,
    run_mlstack,
    stop_everything,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

RETRAIN = r"""
import json, sys
from mlstack.ops.local.retrain import retrain
notes = []
class Progress:
    def start(self, stage): pass
    def finish(self, record): pass
    def note(self, message): notes.append(message)
result = retrain(sys.argv[1], Progress())
print(json.dumps({"notes": notes, "result": None if result is None else {
    "version": result.version, "changed": result.changed, "rollout": result.rollout,
    "stages": [[s.name, str(s.status)] for s in result.stages]}}))
"""


def retrain(project: Path, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", RETRAIN, str(project / "mlstack.yaml")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def append_rows(project: Path) -> None:
    """New rows in the customers source: the newest row of 200 customers again, stamped now
    (the source data's fingerprint changes; the labels stay)."""
    import pandas as pd

    path = project / "data" / "customers.parquet"
    rows = pd.read_parquet(path)
    newest = rows.sort_values("event_timestamp").groupby("customer_id").tail(1).head(200)
    newest = newest.assign(event_timestamp=pd.Timestamp.now(tz="UTC").floor("s"))
    pd.concat([rows, newest], ignore_index=True).to_parquet(path, index=False)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    project, env, port = root / "churn", deploy_env(root), procs.free_port()
    run_mlstack(root, "init", str(project), "--blueprint", "churn", env=env)
    adjust_slos(project / "mlstack.yaml", {
        "latency: {p50_ms: 25, p95_ms: 60, p99_ms: 100}":
            "latency: {p50_ms: 500, p95_ms: 1000, p99_ms: 2000}",
        "throughput_rps: 50": "throughput_rps: 10"},
        "this test judges the retrain's path through the stages, not the latency of a "
        "machine shared with other test runs")
    try:
        run_mlstack(project, "deploy", "--port", str(port), env=env, timeout=900)
        yield {"project": project, "env": env, "port": port}
    finally:
        stop_everything(project, env)


def test_a_retrain_on_new_data_rolls_out_through_the_canary(deployed):
    project, env = deployed["project"], deployed["env"]
    assert deploy_state(project)["current"] == "v1"
    append_rows(project)
    out = retrain(project, env)
    result = out["result"]
    assert result is not None, out
    assert result["version"] == "v2" and result["changed"]
    names = [name for name, _ in result["stages"]]
    for stage in ("train", "register", "profile", "start_service", "skew_check", "verify",
                  "rollout", "promote"):
        assert stage in names, names
    # the canary's steps (churn: 5, 25, 100), the ones below 100% judged by its rules
    assert [s["weight"] for s in result["rollout"]] == [5, 25, 100]
    state = deploy_state(project)
    assert state["current"] == "v2" and state["previous"] == "v1"
    events = [(e["event"], e.get("version"), e.get("trigger")) for e in state["history"]]
    assert ("deploy-started", "v2", "schedule") in events
    assert ("deploy-succeeded", "v2", "schedule") in events
    status = run_mlstack(project, "status", "--format", "json", env=env)
    assert json.loads(status.stdout)["serving"] == "v2"


def test_a_retrain_on_unchanged_data_makes_no_version(deployed):
    project, env = deployed["project"], deployed["env"]
    versions = [v["version"] for v in deploy_state(project)["versions"]]
    out = retrain(project, env)
    assert out["result"] is None
    assert out["notes"] == ["the source data did not change since v2 trained: no new version"]
    state = deploy_state(project)
    assert [v["version"] for v in state["versions"]] == versions
    assert state["history"][-1]["event"] == "retrain-skipped"
