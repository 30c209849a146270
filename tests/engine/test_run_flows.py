"""`mlstack run monitoring|materialize` on a deployed project, with the real libraries.

One churn project, initialised (its sample dated to now) and deployed once as shipped, then:
the monitoring flow runs now and judges what serves (the journal's serving version and its
model, feature freshness read from the online store: minutes old, not days), its report shows
in `mlstack status --json` and in the report `mlstack docs` builds; the materialize flow runs;
with a source file gone, materialize fails with exit 1 naming the task and the cause, no
traceback. Every process is stopped by the module's teardown, by PID and marker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlstack.ops.local import procs
from tests.engine.deploy_support import deploy_env, deploy_state, run_mlstack, stop_everything

pytestmark = [pytest.mark.engine, pytest.mark.slow]

# The newest online row after init + deploy: init dates the sample's newest row to the
# present, deploy materializes it; the test allows for a slow machine, not for days.
FRESH_SECONDS = 1800


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-flows")
    project = root / "churn"
    env = deploy_env(root)
    run_mlstack(root, "init", str(project), "--blueprint", "churn", "--format", "json",
                env=env)
    try:
        run_mlstack(project, "deploy", "--port", str(procs.free_port()), env=env)
        yield {"project": project, "env": env}
    finally:
        stop_everything(project, env)


def _serving(project: Path) -> tuple[str, str]:
    journal = deploy_state(project)
    current = next(v for v in journal["versions"] if v["version"] == journal["current"])
    return current["version"], current["model_tag"]


def test_monitoring_runs_now_and_judges_what_serves(deployed):
    project, env = deployed["project"], deployed["env"]
    version, tag = _serving(project)
    proc = run_mlstack(project, "run", "monitoring", env=env)
    for task in ("ingest", "drift", "freshness", "staleness"):
        assert f"  {task}" in proc.stderr, proc.stderr  # each task as it finished
    assert f"(serving {version}, model {tag})" in proc.stdout, proc.stdout
    assert "in the online store (fresh)" in proc.stdout, proc.stdout

    status = json.loads(run_mlstack(project, "status", "--format", "json", env=env).stdout)
    report = status["monitoring"]
    assert report["serving"] == {"version": version, "model_tag": tag, "from": "deploy"}
    assert report["staleness"]["model_tag"] == tag and report["staleness"]["stale"] is False
    assert 0 <= report["staleness"]["age_seconds"] < FRESH_SECONDS
    fresh = report["freshness"]
    assert fresh["read_from"] == "online store"
    customers = fresh["sources"]["customers"]
    assert 0 <= customers["age_seconds"] < FRESH_SECONDS, customers
    assert customers["fresh"] is True and fresh["stale"] == []
    assert set(customers["views"]) == {"customer_profile"}
    assert not any("model" in alert or "freshness" in alert for alert in report["alerts"])

    run_mlstack(project, "docs", env=env)
    page = (project / "build" / "docs" / "monitoring.html").read_text()
    assert tag in page and "Read from the online store." in page


def test_materialize_runs_and_a_missing_source_fails_it_by_name(deployed):
    project, env = deployed["project"], deployed["env"]
    proc = run_mlstack(project, "run", "materialize", env=env)
    assert "  materialize" in proc.stderr and "materialize completed in" in proc.stdout
    source = project / "data" / "customers.parquet"
    aside = source.with_suffix(".aside")
    source.rename(aside)
    try:
        failed = run_mlstack(project, "run", "materialize", env=env, check=False)
    finally:
        aside.rename(source)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: stage 'materialize' failed:" in failed.stderr, failed.stderr
    assert "customers.parquet" in failed.stderr, failed.stderr
    # the hint names where to read more: the run's page in the Prefect UI when it ran on the
    # project's server (the deploy's scheduler), the log when it ran directly (the runner had
    # not registered the deployment yet)
    assert ("the run in the Prefect UI" in failed.stderr
            or "flow-materialize.log" in failed.stderr), failed.stderr
