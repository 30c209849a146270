"""A scheduled retrain's decisions (mlstack.ops.local.retrain) and deploy's plan against the
serving version (mlstack.ops.local.stages.plan), without starting anything: liveness is
stubbed where a plan reads processes. The real thing: tests/engine/test_retrain.py."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.analysis import require_system
from mlstack.ops.local import retrain as retraining
from mlstack.ops.local.stages import plan as planning
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths, project_lock
from tests.conftest import BLUEPRINTS


def serving(**changes) -> Version:
    return Version(**{"version": "v1", "model_tag": "churn:abc", "spec_hash": "h1",
                      "training_key": "k1", "status": VersionStatus.SERVING, **changes})


def test_nothing_deployed_waits_for_deploy():
    decision = retraining.decide(None, False, None, "h1", "k1")
    assert decision.action == "wait" and "waits for `mlstack deploy`" in decision.reason


def test_a_changed_spec_waits_for_deploy():
    decision = retraining.decide(serving(), True, "h1", "h2", "k2")
    assert decision.action == "wait"
    assert "spec changed since v1" in decision.reason
    assert "waits for `mlstack deploy`" in decision.reason


def test_a_spec_that_does_not_compile_waits_for_deploy():
    assert retraining.decide(serving(), True, "h1", None, "k2").action == "wait"


def test_a_stopped_serving_version_waits_for_deploy():
    assert retraining.decide(serving(), False, "h1", "h1", "k2").action == "wait"


def test_unchanged_data_makes_no_version():
    decision = retraining.decide(serving(), True, "h1", "h1", "k1")
    assert decision.action == "unchanged" and "no new version" in decision.reason


def test_changed_data_trains():
    assert retraining.decide(serving(), True, "h1", "h1", "k2").action == "train"


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retrain") / "churn"
    shutil.copytree(BLUEPRINTS / "churn", folder)
    system, _ = require_system(folder / "mlstack.yaml")
    return folder, system


def test_rollout_walks_deploys_stages_and_register_stops_after_training(churn):
    _, system = churn
    plan = retraining.retrain_plan(system, serving(), "data changed")
    assert plan.stages == planning.NEW_VERSION_STAGES and plan.trigger == "schedule"
    assert plan.stages.index("sidecars") < plan.stages.index("rollout")
    registering = system.model_copy(update={"training": system.training.model_copy(
        update={"on_new_model": "register"})})
    assert retraining.retrain_plan(registering, serving(), "x").stages == ("train",)


def _deployed(monkeypatch, folder, system, *, serves: bool = True):
    """A record of v1 serving `system` on data as they are, its processes stubbed alive."""
    paths = ProjectPaths.for_spec(folder / "mlstack.yaml")
    key = planning.data_key(system, folder)
    current = serving(spec_hash=system.spec_hash, training_key=key)
    state = DeploymentState(versions=[current], current="v1", routes={"v1": 100})
    state.router.port = 3000
    monkeypatch.setattr(planning, "supervised", lambda p, v: v is current)
    monkeypatch.setattr(planning, "router_alive", lambda p, s: serves)
    monkeypatch.setattr(planning, "routed", lambda p: {"v1": 100})
    monkeypatch.setattr(planning, "deployed_system", lambda p, v: system)
    monkeypatch.setattr(planning, "_service_files_differ", lambda p, v, f: False)
    return paths, state, key


def test_the_plan_against_the_serving_version_keeps_it_when_nothing_changed(churn, monkeypatch):
    folder, system = churn
    paths, state, _ = _deployed(monkeypatch, folder, system)
    plan = planning.plan_deploy(system, paths, state, port=3000, files={})
    assert not plan.new_version and plan.actions.nothing and plan.serving == "v1"
    assert plan.stages == planning.KEEP_SERVING_STAGES


def test_the_plan_retrains_when_the_data_changed_since_the_serving_version(churn, monkeypatch):
    folder, system = churn
    paths, state, _ = _deployed(monkeypatch, folder, system)
    state.versions[0].training_key = "older data"
    plan = planning.plan_deploy(system, paths, state, port=3000, files={})
    assert plan.new_version and plan.actions.train and plan.reuse is None
    assert plan.stages == planning.NEW_VERSION_STAGES
    assert "source data changed: retrain" in plan.reasons


def test_a_registered_candidate_is_rolled_out_without_training(churn, monkeypatch):
    folder, system = churn
    paths, state, key = _deployed(monkeypatch, folder, system)
    state.versions[0].training_key = "older data"
    state.versions.append(Version("v2", model_tag="churn:new", spec_hash=system.spec_hash,
                                  training_key=key, status=VersionStatus.STOPPED))
    state.record(planning.CANDIDATE_EVENT, version="v2", model_tag="churn:new")
    plan = planning.plan_deploy(system, paths, state, port=3000, files={})
    assert plan.new_version and not plan.actions.train
    assert (plan.candidate, plan.reuse) == ("v2", "v2")
    # trained on other data than the files hold now: it is not the candidate
    state.versions[1].training_key = "other data"
    plan = planning.plan_deploy(system, paths, state, port=3000, files={})
    assert plan.actions.train and plan.candidate is None


def test_retrain_waits_for_a_command_holding_the_lock_then_gives_up(churn, tmp_path):
    folder, _ = churn
    paths = ProjectPaths.for_spec(folder / "mlstack.yaml")
    with project_lock(paths):
        began = time.monotonic()
        with pytest.raises(UsageError, match="gave up"):
            retraining.retrain(folder / "mlstack.yaml", lock_wait=1.0)
        assert time.monotonic() - began >= 1.0  # it waited before giving up


def test_retrain_goes_on_once_the_lock_is_released(churn):
    folder, _ = churn
    paths = ProjectPaths.for_spec(folder / "mlstack.yaml")
    held, released = threading.Event(), threading.Event()

    def hold() -> None:
        with project_lock(paths):
            held.set()
            time.sleep(1.0)
        released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(30)
    notes = []

    class Progress:
        def start(self, stage): ...

        def finish(self, record): ...

        def note(self, message):
            notes.append(message)

    assert retraining.retrain(folder / "mlstack.yaml", Progress(), lock_wait=120) is None
    thread.join()
    assert released.is_set()
    assert notes == ["nothing is deployed: the scheduled retrain waits for `mlstack deploy`"]
    history = DeploymentState.load(paths.deployments_file).history
    assert history[-1]["event"] == "retrain-skipped" and history[-1]["trigger"] == "schedule"
