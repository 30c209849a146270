"""The deploy's executor (ops/local/stages): the sidecars stage runs after the new version is
ready and before any traffic moves, and a sidecar that cannot start fails the deploy with its
cause while the old version stays current; the keeper is started after a successful deploy
only where its module has `ensure_running`. No service is started: the stages that would
start one are stubbed; the sidecar is a real process that exits."""

from __future__ import annotations

import shutil
import sys

import pytest

from mlstack.diagnostics.errors import StageError
from mlstack.frontend.analysis import require_system
from mlstack.ops.local import deploy, keeper, procs, sidecars
from mlstack.ops.local.stages import promote
from mlstack.ops.local.stages import sidecars as sidecar_stage
from mlstack.ops.local.stages.context import DeployContext, DeployOptions, NullProgress, StageLog
from mlstack.ops.local.stages.plan import DeployPlan
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from mlstack.workspace.plan import DeployActions
from tests.conftest import BLUEPRINTS


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "churn"
    shutil.copytree(BLUEPRINTS / "churn", folder)
    system, _ = require_system(folder / "mlstack.yaml")
    paths = ProjectPaths.for_spec(folder / "mlstack.yaml")
    paths.build_dir.mkdir(parents=True)
    (paths.build_dir / "README.md").write_text("a tree\n")
    state = DeploymentState(versions=[Version("v1", model_tag="churn:v1",
                                              status=VersionStatus.SERVING)], current="v1")
    state.save(paths.deployments_file)
    yield system, paths, state
    procs.stop_owned(paths.project_id)


def _failing_sidecar(paths) -> sidecars.Sidecar:
    return sidecars.Sidecar(name="broken", what="a broken scheduler", cwd=paths.project_dir,
                            argv=(sys.executable, "-c",
                                  "import sys; print('port 4200 is taken'); sys.exit(3)"))


def test_a_sidecar_that_cannot_start_fails_the_deploy_before_traffic_moves(project,
                                                                           monkeypatch):
    system, paths, state = project
    ran = []
    for name in ("train", "profile", "start", "skew", "verify", "rollout"):
        module = __import__(f"mlstack.ops.local.stages.{name}", fromlist=["run"])
        monkeypatch.setattr(module, "run", lambda ctx, name=name: ran.append(name))
    monkeypatch.setattr(sidecars, "declared", lambda p, s: [_failing_sidecar(paths)])
    plan = DeployPlan(DeployActions(True, True, True, ("test",)), "v1", True,
                      stages=("train", "profile", "start_service", "skew_check", "verify",
                              "sidecars", "rollout", "promote"))
    with pytest.raises(StageError) as failed:
        deploy.run_plan(system, paths, DeployOptions(), state, plan,
                        StageLog(NullProgress()), source=paths.build_dir)
    assert failed.value.stage == "sidecars"
    assert "a broken scheduler exited at its start" in failed.value.message
    assert "port 4200 is taken" in failed.value.message  # its cause, from its log
    assert ran == ["train", "profile", "start", "skew", "verify"]  # no rollout
    saved = DeploymentState.load(paths.deployments_file)
    assert saved.current == "v1"
    assert saved.get("v2").status == VersionStatus.FAILED
    assert saved.history[-1]["event"] == "deploy-failed"
    assert saved.history[-1]["stage"] == "sidecars"
    assert failed.value.result.failed == failed.value.message


def test_no_declared_sidecar_is_no_stage(project, monkeypatch):
    system, paths, state = project
    monkeypatch.setattr(sidecars, "declared", lambda p, s: [])
    log = StageLog(NullProgress())
    ctx = DeployContext(system, paths, DeployOptions(), state, None, state.versions[0], log)
    sidecar_stage.run(ctx)
    assert log.records == []


def test_the_keeper_is_started_after_a_successful_deploy(project, monkeypatch):
    system, paths, state = project
    calls: list = []
    monkeypatch.setattr(keeper, "ensure_running", calls.append)
    version = Version("v2", model_tag="churn:v2")
    state.versions.append(version)
    ctx = DeployContext(system, paths, DeployOptions(), state, None, version,
                        StageLog(NullProgress()))
    promote.run(ctx)
    assert calls == [paths]
    assert DeploymentState.load(paths.deployments_file).current == "v2"


def test_a_keeper_that_cannot_start_fails_the_deploy_naming_itself(project, monkeypatch):
    system, paths, state = project

    def broken(_paths):
        raise RuntimeError("its lock file is not writable")

    monkeypatch.setattr(keeper, "ensure_running", broken)
    ctx = DeployContext(system, paths, DeployOptions(), state, None, state.versions[0],
                        StageLog(NullProgress()))
    with pytest.raises(StageError) as failed:
        promote.start_keeper(ctx)
    assert failed.value.stage == "keeper" and "its lock file is not writable" in str(failed.value)


def test_an_unchanged_deploy_reports_sidecars_only_when_it_starts_one(project, monkeypatch):
    from mlstack.ops.local.stages import keep

    system, paths, state = project
    sleeper = sidecars.Sidecar(name="sleeper", what="a scheduler", cwd=paths.project_dir,
                               argv=(sys.executable, "-c", "import time; time.sleep(120)"))
    monkeypatch.setattr(sidecars, "declared", lambda p, s: [sleeper])
    plan = DeployPlan(DeployActions(False, False, False), "v1", False, stages=("keep_serving",))

    def unchanged() -> list[str]:
        log = StageLog(NullProgress())
        current = state.versions[0]
        keep.run(DeployContext(system, paths, DeployOptions(), state, current, current, log,
                               plan))
        return [r.name for r in log.records]

    assert unchanged() == ["unchanged", "sidecars"]  # it was not running: started
    assert sidecars.running(paths, "sleeper")
    assert unchanged() == ["unchanged"]  # running as declared: nothing to report


def test_without_prometheus_the_sidecars_stage_says_once_that_alerts_are_not_evaluated(
        project, monkeypatch):
    from mlstack.ops.local import alerting

    system, paths, state = project
    sleeper = sidecars.Sidecar(name="sleeper", what="a scheduler", cwd=paths.project_dir,
                               argv=(sys.executable, "-c", "import time; time.sleep(120)"))
    monkeypatch.setattr(sidecars, "declared", lambda p, s: [sleeper])
    monkeypatch.setattr(alerting, "prometheus_binary", lambda: None)
    log = StageLog(NullProgress())
    sidecar_stage.run(DeployContext(system, paths, DeployOptions(), state, None,
                                    state.versions[0], log))
    [record] = log.records
    assert record.name == "sidecars"
    assert record.detail.endswith("; alerts are not evaluated locally: Prometheus is not on "
                                  "PATH (Debian: apt-get install prometheus "
                                  "prometheus-alertmanager)")
