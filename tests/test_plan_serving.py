"""`mlstack plan` on a deployed local project plans against the version that serves, with
deploy's own function (stages.plan.plan_deploy), as Terraform plans against prior state: a
deploy that compiled the new spec into build/ and then failed leaves a plan that still says
it would deploy, not "nothing to do". Processes are stubbed alive; nothing is started."""

from __future__ import annotations

import json
import shutil

import pytest

from mlstack.cli.main import main
from mlstack.ops.local.stages import plan as planning
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from mlstack.workspace.build import compile_spec, compile_tree
from tests.conftest import BLUEPRINTS


@pytest.fixture
def deployed(tmp_path, monkeypatch):
    """churn compiled, its tree snapshotted as v1 and recorded serving on the data as they
    are; v1, the router and its table stubbed alive."""
    spec = tmp_path / "churn" / "mlstack.yaml"
    spec.parent.mkdir()
    shutil.copy(BLUEPRINTS / "churn" / "mlstack.yaml", spec)
    compile_spec(spec)
    paths = ProjectPaths.for_spec(spec)
    shutil.copytree(paths.build_dir, paths.versions_dir / "v1")
    system = compile_tree(spec).system
    state = DeploymentState(versions=[Version(
        "v1", model_tag="churn:v1", spec_hash=system.spec_hash, pid=1,
        training_key=planning.data_key(system, spec.parent), status=VersionStatus.SERVING)],
        current="v1", routes={"v1": 100})
    state.router.port, state.router.pid = 3000, 1
    state.save(paths.deployments_file)
    monkeypatch.setattr(planning, "supervised", lambda p, v: v is not None and v.version == "v1")
    monkeypatch.setattr(planning, "router_alive", lambda p, s: True)
    monkeypatch.setattr(planning, "routed", lambda p: {"v1": 100})
    return spec


def test_plan_of_a_deployed_project_that_serves_its_spec_says_nothing_to_do(deployed, capsys):
    assert main(["plan", str(deployed), "--detailed-exitcode"]) == 0
    out = capsys.readouterr().out
    assert "Deploy (against v1, serving): nothing to do" in out


def test_after_a_failed_deploy_plan_still_says_it_would_deploy(deployed, capsys):
    # what a deploy leaves when a stage fails: the new spec compiled into build/, v1 serving
    deployed.write_text(deployed.read_text().replace("n_estimators: 150", "n_estimators: 90"))
    compile_spec(deployed)
    assert main(["plan", str(deployed), "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert "No changes:" in out  # build/ is the last compile ...
    assert "Deploy (against v1, serving): retrain, start a new service version" in out
    assert "because model churn: retrain" in out
    assert "stages: train -> profile -> start_service" in out
    assert main(["plan", str(deployed), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)["deploy"]
    assert data["serving"] == "v1" and data["new_version"] and data["train"]
    assert data["stages"] == list(planning.NEW_VERSION_STAGES)


def test_new_source_data_is_planned_as_a_retrain(deployed, capsys):
    data = deployed.parent / "data"
    data.mkdir()
    (data / "customers.parquet").write_bytes(b"new rows")
    assert main(["plan", str(deployed), "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["deploy"]
    assert plan["train"] and "source data changed: retrain" in plan["reasons"]
