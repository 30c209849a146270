"""`plan` on a deployed local project names the source files whose schema changed since the
serving version as "re-validate data", with the columns (issue 26): deploy records each file
source's schema (a parquet footer, a CSV header and sample: what `lint --data` reads) with
the version's snapshot, and plan compares the files now against that record. Processes are
stubbed alive; nothing is started."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from mlstack.cli.main import main
from mlstack.ops.local import deploy
from mlstack.ops.local.stages import plan as planning
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from mlstack.workspace.build import compile_spec, compile_tree
from tests.conftest import BLUEPRINTS


@pytest.fixture
def deployed(tmp_path, monkeypatch):
    """churn with its data, compiled, its tree snapshotted as v1 with the schemas recorded as
    deploy records them, and recorded serving on the data as they are; v1, the router and its
    table stubbed alive."""
    project = tmp_path / "churn"
    shutil.copytree(BLUEPRINTS / "churn", project,
                    ignore=shutil.ignore_patterns("build", ".mlstack"))
    spec = project / "mlstack.yaml"
    compile_spec(spec)
    paths = ProjectPaths.for_spec(spec)
    shutil.copytree(paths.build_dir, paths.versions_dir / "v1")
    system = compile_tree(spec).system
    planning.record_schemas(system, project, paths.versions_dir / "v1")
    state = DeploymentState(versions=[Version(
        "v1", model_tag="churn:v1", spec_hash=system.spec_hash, pid=1,
        training_key=planning.data_key(system, project), status=VersionStatus.SERVING)],
        current="v1", routes={"v1": 100})
    state.router.port, state.router.pid = 3000, 1
    state.save(paths.deployments_file)
    monkeypatch.setattr(planning, "supervised", lambda p, v: v is not None and v.version == "v1")
    monkeypatch.setattr(planning, "router_alive", lambda p, s: True)
    monkeypatch.setattr(planning, "routed", lambda p: {"v1": 100})
    return spec


def _plan(spec, capsys) -> tuple[str, dict]:
    assert main(["plan", str(spec)]) == 0
    text = capsys.readouterr().out
    assert main(["plan", str(spec), "--format", "json"]) == 0
    return text, json.loads(capsys.readouterr().out)["deploy"]


def test_the_recorded_schema_is_the_files_columns_and_types(deployed):
    paths = ProjectPaths.for_spec(deployed)
    recorded = json.loads((paths.versions_dir / "v1" / planning.SCHEMAS_FILE).read_text())
    assert recorded["customers"] == {
        "customer_id": "int64", "event_timestamp": "timestamp", "is_monthly_contract": "int64",
        "monthly_charges": "float64", "support_calls": "int64", "tenure_months": "int64"}
    assert set(recorded) == {"customers", "churn_labels"}


def test_a_changed_column_type_is_re_validate_data_naming_the_columns(deployed, capsys):
    data = deployed.parent / "data" / "customers.parquet"
    frame = pd.read_parquet(data)
    frame = frame.assign(monthly_charges=frame["monthly_charges"].map(lambda v: f"{v:.2f}"),
                         plan="basic").drop(columns=["support_calls"])
    frame.to_parquet(data, index=False)
    text, plan = _plan(deployed, capsys)
    line = ("because source customers: re-validate data, its file's columns changed: "
            "monthly_charges float64 -> string, plan added (string), support_calls removed "
            "(was int64)")
    assert line in text, text
    assert "Deploy (against v1, serving): retrain" in text
    assert plan["train"] is True
    assert plan["schema_changes"] == [
        {"source": "customers", "column": "monthly_charges", "old": "float64", "new": "string"},
        {"source": "customers", "column": "plan", "old": None, "new": "string"},
        {"source": "customers", "column": "support_calls", "old": "int64", "new": None}]


def test_new_rows_of_the_same_schema_retrain_without_re_validate(deployed, capsys):
    data = deployed.parent / "data" / "customers.parquet"
    frame = pd.read_parquet(data)
    pd.concat([frame, frame.tail(5)], ignore_index=True).to_parquet(data, index=False)
    text, plan = _plan(deployed, capsys)
    assert "because source data changed: retrain" in text
    assert "re-validate data" not in text and plan["schema_changes"] == []


def test_unchanged_data_is_nothing_to_do(deployed, capsys):
    text, plan = _plan(deployed, capsys)
    assert "Deploy (against v1, serving): nothing to do" in text
    assert plan["schema_changes"] == []


def test_a_version_deployed_without_a_record_plans_as_before(deployed, capsys):
    paths = ProjectPaths.for_spec(deployed)
    (paths.versions_dir / "v1" / planning.SCHEMAS_FILE).unlink()
    data = deployed.parent / "data" / "customers.parquet"
    frame = pd.read_parquet(data)
    frame.assign(monthly_charges=frame["monthly_charges"].astype(str)).to_parquet(data)
    text, plan = _plan(deployed, capsys)
    assert "because source data changed: retrain" in text
    assert "re-validate data" not in text and plan["schema_changes"] == []


def test_an_unreadable_file_is_left_to_ingest(deployed, capsys):
    (deployed.parent / "data" / "customers.parquet").write_bytes(b"torn")
    text, plan = _plan(deployed, capsys)
    assert "because source data changed: retrain" in text
    assert plan["schema_changes"] == []


def test_deploy_records_the_schemas_with_the_new_versions_snapshot(deployed, monkeypatch):
    """run_plan writes the record into the new version's snapshot before its stages run (the
    stages are stubbed to fail at once: the old version serves on)."""
    paths = ProjectPaths.for_spec(deployed)
    data = deployed.parent / "data" / "customers.parquet"
    frame = pd.read_parquet(data)
    frame.assign(tenure_months=frame["tenure_months"].astype("float64")).to_parquet(data)
    system = compile_tree(deployed).system
    state = DeploymentState.load(paths.deployments_file)
    plan = planning.plan_deploy(system, paths, state, port=3000)
    assert [c.describe() for c in plan.schema_changes] == ["tenure_months int64 -> float64"]
    seen = {}

    def stop_at_once(ctx):
        seen["record"] = json.loads((ctx.code_dir / planning.SCHEMAS_FILE).read_text())
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(deploy, "execute", stop_at_once)
    monkeypatch.setattr(deploy, "stop_version", lambda p, v: None)
    monkeypatch.setattr(deploy, "supervised", lambda p, v: True)
    monkeypatch.setattr(deploy, "route", lambda p, routes, s: None)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        deploy.run_plan(system, paths, deploy.DeployOptions(port=3000), state, plan,
                        deploy.StageLog(deploy.NullProgress()), source=paths.build_dir)
    assert seen["record"]["customers"]["tenure_months"] == "float64"
    assert (paths.versions_dir / "v2" / planning.SCHEMAS_FILE).is_file()
