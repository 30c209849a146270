"""The generated Prefect flows, run with the real Prefect, Feast, scikit-learn and BentoML.

The churn training flow runs to completion against a temporary Prefect API (no server to
start by hand) and its model, metrics and lineage are checked against what pandas and
scikit-learn compute independently from the source files. A gate that cannot be met fails
the run at evaluate, a failed data check fails it at validate, neither is retried. The
monitoring and materialize flows run on the trained system; prefect.yaml deploys for real.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.prefect import PrefectBackend
from mlstack.codegen.formatter import _ruff
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from mlstack.runtime.devices import NoGpuError
from mlstack.runtime.errors import DataCheckError, QualityGateError
from mlstack.runtime.hooks import retry_unless_final
from mlstack.runtime.monitoring import ks, psi
from mlstack.workspace.writer import write_tree
from tests.conftest import BLUEPRINTS, redate_project

CHURN = BLUEPRINTS / "churn"
PACKAGE = "churn_system"
VIEW_FIELDS = ("tenure_months", "monthly_charges", "support_calls", "is_monthly_contract")
_loaded = itertools.count()


def _forget_modules() -> None:
    """Each compiled tree has its own churn_system: drop the one imported before."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")
                 or m == f"{PACKAGE}_feature_repo" or m.split(".")[0] == "pipelines"]:
        del sys.modules[name]


def _project(root: Path, edit=None) -> Path:
    """A copy of the churn blueprint (spec + data, moved to the present: online reads null a
    value older than its view's TTL) under `root`, its spec edited by `edit`."""
    project = root / "project"
    shutil.copytree(CHURN, project, ignore=shutil.ignore_patterns("build", ".mlstack"))
    redate_project(project)
    if edit is not None:
        spec = yaml.safe_load((project / "mlstack.yaml").read_text())
        edit(spec)
        (project / "mlstack.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return project


def _compile(project: Path):
    """Compile the project's spec into project/build (with its manifest, which the model's
    lineage reads the spec hash from); returns (system IR, output folder)."""
    system, _ = require_system(project / "mlstack.yaml")
    out = project / "build"
    write_tree(compile_system(system, CompileOptions(project_dir="..")), out, system=system)
    return system, out


def _load_flows(out: Path, state: Path, patch: pytest.MonkeyPatch):
    """Import out/pipelines/flows.py (and the tree's churn_system) with its own state dir."""
    patch.setenv("MLSTACK_STATE_DIR", str(state))
    patch.syspath_prepend(str(out))
    _forget_modules()
    name = f"_mlstack_flows_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, out / "pipelines" / "flows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _task_runs(flow_run_id) -> dict[str, tuple[str, int]]:
    """{task name: (final state type, run count)} of one flow run, read from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: (run.state.type.value, run.run_count) for run in runs}


def _expected_test_split(project: Path, system) -> pd.DataFrame:
    """The held-out rows computed without mlstack: point-in-time join with pandas
    (latest customer row at or before the label time, within the view's TTL), then the
    latest 20% of label rows by (time, customer_id); model columns built by hand."""
    labels = pd.read_parquet(project / "data" / "churn_labels.parquet")
    customers = pd.read_parquet(project / "data" / "customers.parquet")
    for frame in (labels, customers):
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
    ttl = pd.Timedelta(seconds=system.view("customer_profile").ttl_seconds)
    joined = pd.merge_asof(labels.sort_values("event_timestamp"),
                           customers.sort_values("event_timestamp"), on="event_timestamp",
                           by="customer_id", direction="backward", tolerance=ttl)
    joined = joined.dropna(subset=list(VIEW_FIELDS))
    joined = joined.sort_values(["event_timestamp", "customer_id"]).reset_index(drop=True)
    test = joined.iloc[len(joined) - math.ceil(len(joined) * system.training.test_fraction):]
    frame = pd.DataFrame({f"customer_profile__{f}": test[f].to_numpy() for f in VIEW_FIELDS})
    frame["charges_per_tenure"] = (test["monthly_charges"] / (test["tenure_months"] + 1)).to_numpy()
    frame = frame[[f.column for f in system.model.features]]
    frame["churned"] = test["churned"].to_numpy()
    return frame


@pytest.fixture(scope="module")
def bentoml_home(tmp_path_factory):
    """A private BentoML model store (unless an earlier test fixed this process's store)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml_home")))
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_api, bentoml_home):
    """The churn system compiled from a git-tracked project and trained by its flow."""
    root = tmp_path_factory.mktemp("prefect_churn")
    project = _project(root)
    git = ["git", "-c", "user.name=mlstack-test", "-c", "user.email=test@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "churn"]):
        subprocess.run([*git, *args], cwd=project, check=True, capture_output=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, check=True,
                         capture_output=True, text=True).stdout.strip()
    system, out = _compile(project)
    with pytest.MonkeyPatch.context() as patch:
        flows = _load_flows(out, root / "state", patch)
        result = flows.training_flow()
        yield SimpleNamespace(system=system, project=project, out=out, state=root / "state",
                              flows=flows, result=result, git_sha=sha)
    _forget_modules()


@pytest.mark.engine
def test_training_flow_trains_a_model_that_passes_its_gates(trained):
    result, system = trained.result, trained.system
    assert set(result) == {"flow_run_id", "model_tag", "metrics", "gates", "data_fingerprint",
                           "device", "promoted", "rows", "changes", "evaluation"}
    # the training file holds the same record, its curves included (what the report draws)
    recorded = json.loads((trained.state / "training.json").read_text())
    assert recorded == {"status": "completed", **json.loads(json.dumps(result))}
    # the first training of this project: every row is new to it (runtime.changes)
    customers = result["changes"]["customers"]
    assert customers["previous_rows"] is None or customers["added"] == customers["rows"], \
        customers
    assert result["device"] == {"device": "cpu", "reason": "sklearn trains on the CPU",
                                "visible_gpus": 0}
    assert set(result["metrics"]) == set(system.evaluation.metrics)
    assert result["metrics"]["auc"] >= 0.80
    assert result["gates"] == [{"metric": "auc", "op": ">=", "threshold": 0.8,
                                "value": result["metrics"]["auc"], "passed": True}]
    labels = pd.read_parquet(trained.project / "data" / "churn_labels.parquet")
    customers = pd.read_parquet(trained.project / "data" / "customers.parquet")
    assert result["rows"]["sources"] == {"churn_labels": len(labels), "customers": len(customers)}
    assert result["rows"]["train"] + result["rows"]["test"] == result["rows"]["training_set"]


@pytest.mark.engine
def test_recorded_metrics_match_sklearn_on_an_independent_split(trained):
    import bentoml
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        f1_score,
        roc_auc_score,
    )

    model = bentoml.sklearn.load_model(trained.result["model_tag"])
    expected = _expected_test_split(trained.project, trained.system)
    assert len(expected) == trained.result["rows"]["test"]
    features, y = expected.drop(columns=["churned"]), expected["churned"]
    metrics = trained.result["metrics"]
    assert metrics["auc"] == pytest.approx(roc_auc_score(y, model.predict_proba(features)[:, 1]),
                                           abs=1e-12)
    assert metrics["f1"] == pytest.approx(f1_score(y, model.predict(features)), abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, model.predict(features)),
                                                abs=1e-12)
    # the curves, confusion matrix and importance recorded with them, against scikit-learn
    details, proba = trained.result["evaluation"], model.predict_proba(features)[:, 1]
    roc, pr = details["roc_curve"], details["pr_curve"]
    assert roc["auc"] == pytest.approx(metrics["auc"], rel=1e-5)
    assert pr["average_precision"] == pytest.approx(average_precision_score(y, proba), rel=1e-5)
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert 2 < len(roc["fpr"]) == len(pr["recall"]) <= 100
    assert details["confusion_matrix"] == {
        "labels": [0, 1], "threshold": 0.5,
        "counts": confusion_matrix(y, (proba >= 0.5).astype(int), labels=[0, 1]).tolist()}
    importance = details["feature_importance"]
    by_name = dict(zip(features.columns, model.feature_importances_, strict=True))
    assert importance["method"] == "feature_importances_"
    assert sorted(importance["features"]) == sorted(features.columns)
    assert importance["values"] == sorted(importance["values"], reverse=True)
    assert importance["values"] == pytest.approx([by_name[n] for n in importance["features"]],
                                                 rel=1e-5)


@pytest.mark.engine
def test_model_is_registered_with_lineage_and_promoted(trained):
    import bentoml

    tag, system = trained.result["model_tag"], trained.system
    model = bentoml.models.get(tag)
    assert model.tag.name == system.python_name
    assert model.info.labels == {"system": system.name}
    assert set(model.info.signatures) == {"predict", "predict_proba"}
    assert all(s.batchable for s in model.info.signatures.values())
    digests = "".join(
        f"{name}:{hashlib.sha256((trained.project / path).read_bytes()).hexdigest()}\n"
        for name, path in sorted([("churn_labels", "data/churn_labels.parquet"),
                                  ("customers", "data/customers.parquet")]))
    fingerprint = hashlib.sha256(digests.encode()).hexdigest()
    assert trained.result["data_fingerprint"] == fingerprint
    metadata = dict(model.info.metadata)
    runtime = metadata.pop("serving_runtime")
    assert metadata == {
        "spec_hash": system.spec_hash, "data_fingerprint": fingerprint,
        "metrics": trained.result["metrics"], "git_sha": trained.git_sha,
        "model_columns": [f.column for f in system.model.features]}
    # exported to ONNX and checked on the held-out rows (mlstack.runtime.scoring)
    assert runtime["runtime"] == "onnx" and runtime["requested"] == "auto"
    assert runtime["rows"] == trained.result["rows"]["test"]
    assert runtime["max_abs_diff"] <= runtime["tolerance"] == 1e-5
    assert model.custom_objects["model.onnx"][:2]  # the ONNX bytes travel with the model
    promoted = json.loads((trained.state / "models.json").read_text())
    assert promoted["current"] == tag
    assert promoted["history"][-1]["model_tag"] == tag
    outcome = json.loads((trained.state / "training.json").read_text())
    assert outcome == {"status": "completed", **trained.result}


@pytest.mark.engine
def test_monitoring_flow_reports_drift_freshness_and_staleness(trained):
    system = trained.system
    sys.modules["pipelines.flows"] = trained.flows  # the monitoring flow reuses its tasks
    monitoring = importlib.import_module("pipelines.monitoring")
    report = monitoring.monitoring_flow()
    drift = report["drift"]
    assert drift["method"] == "psi" and drift["threshold"] == 0.2
    assert set(drift["features"]) == set(system.monitoring.drift_features)
    for column, stats in drift["features"].items():
        assert stats["statistic"] is not None and math.isfinite(stats["statistic"]), column
        assert stats["drifted"] == (stats["statistic"] > 0.2)
    newest = pd.read_parquet(trained.project / "data" / "customers.parquet")[
        "event_timestamp"].max()
    freshness = report["freshness"]["sources"]["customers"]
    assert pd.Timestamp(freshness["newest"]) == newest
    assert freshness["fresh"] == (freshness["age_seconds"] <= 86400)
    assert report["staleness"]["model_tag"] == trained.result["model_tag"]
    assert report["staleness"]["stale"] is False
    assert ("source customers is older than the freshness SLO" in report["alerts"]) == (
        not freshness["fresh"])
    assert json.loads((trained.state / "monitoring.json").read_text()) == json.loads(
        json.dumps(report))


@pytest.mark.engine
def test_drift_statistics_match_their_definitions(trained):
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(5)
    reference, same, shifted = (rng.normal(0, 1, 5000), rng.normal(0, 1, 5000),
                                rng.normal(1, 1, 5000))
    assert psi(reference, same) < 0.05
    assert psi(reference, shifted) > 0.2
    for current in (same, shifted):
        assert ks(reference, current) == pytest.approx(
            ks_2samp(reference, current).statistic, abs=1e-12)


@pytest.mark.engine
def test_materialize_flow_refreshes_the_online_store(trained):
    result = trained.flows.materialize_flow()
    assert pd.Timestamp(result["materialized_at"]).tzinfo is not None
    customers = pd.read_parquet(trained.project / "data" / "customers.parquet")
    latest = customers.sort_values("event_timestamp").groupby("customer_id").last()
    ids = [int(latest.index[0]), int(latest.index[-1])]
    online = trained.flows.store.online_features([{"customer_id": i} for i in ids])
    for field in VIEW_FIELDS:
        assert online[f"customer_profile__{field}"].tolist() == latest.loc[ids, field].tolist()


@pytest.mark.engine
def test_deployments_apply_to_a_real_prefect_api(trained, monkeypatch):
    """`prefect deploy` with the generated prefect.yaml creates the three deployments with
    their schedules on the target's work pool."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL
    from prefect.workers.process import ProcessWorker

    text = (trained.out / "pipelines" / "prefect.yaml").read_text()
    assert str(trained.out) not in text and str(trained.project) not in text
    config = yaml.safe_load(text)
    pool = config["definitions"]["work_pool"]["name"]
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(
            name=pool, type="process",
            base_job_template=ProcessWorker.get_default_base_job_template()))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PYTHONPATH": os.pathsep.join([str(trained.out), os.environ.get("PYTHONPATH", "")])}
    deploy = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all",
         "--prefect-file", "pipelines/prefect.yaml"],
        cwd=trained.out, env=env, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    name = trained.system.name
    expected = {f"{name}-training": ("training_flow", {"cron": "0 0 * * *"}),
                f"{name}-materialize": ("materialize_flow", {"interval": 43200.0}),
                f"{name}-monitoring": ("monitoring_flow", {"interval": 3600.0})}
    assert set(deployments) >= set(expected)
    for deployment_name, (function, schedule) in expected.items():
        deployment = deployments[deployment_name]
        module = "monitoring" if function == "monitoring_flow" else "flows"
        assert deployment.entrypoint == f"pipelines/{module}.py:{function}"
        assert deployment.work_pool_name == pool
        assert deployment.job_variables["env"]["DO_NOT_TRACK"] == "1"
        [active] = deployment.schedules
        (key, value), = schedule.items()
        actual = active.schedule.model_dump()[key]
        if key == "interval":
            actual = actual.total_seconds()
        assert actual == value
        pulled = deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
        assert Path(pulled["directory"]).resolve() == trained.out.resolve()


def _failing_run(tmp_path, edit):
    """Compile an edited churn spec and run its training flow; returns the flow module, the
    exception the run failed with, its task runs and the project folder."""
    project = _project(tmp_path, edit)
    _, out = _compile(project)
    with pytest.MonkeyPatch.context() as patch:
        flows = _load_flows(out, tmp_path / "state", patch)
        state = flows.training_flow(return_state=True)
        _forget_modules()
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    return flows, error, _task_runs(state.state_details.flow_run_id), project


@pytest.mark.engine
def test_gate_that_cannot_be_met_fails_the_flow_at_evaluate(tmp_path, prefect_api, bentoml_home):
    import bentoml

    def strict_gate(spec):
        spec["evaluation"]["gates"] = {"auc": ">= 0.999"}

    models_before = len(bentoml.models.list("churn"))
    flows, error, task_runs, _ = _failing_run(tmp_path, strict_gate)
    assert isinstance(error, QualityGateError)
    assert str(error).startswith("gate auc >= 0.999 failed: auc = 0.8"), str(error)
    assert task_runs["evaluate"] == ("FAILED", 1)  # failed gates are not retried
    assert flows.evaluate.retries == 2
    assert all(task_runs[t][0] == "COMPLETED"
               for t in ("ingest", "validate", "feast_apply", "materialize", "training_set",
                         "train"))
    assert "register" not in task_runs and "promote" not in task_runs
    assert len(bentoml.models.list("churn")) == models_before
    assert not (tmp_path / "state" / "models.json").exists()
    outcome = json.loads((tmp_path / "state" / "training.json").read_text())
    assert outcome["status"] == "failed" and outcome["error_type"] == "QualityGateError"
    assert outcome["error"] == str(error)


@pytest.mark.engine
def test_a_required_gpu_that_is_not_visible_stops_the_flow_before_training(
        tmp_path, prefect_api, monkeypatch):
    pytest.importorskip("xgboost")

    def xgboost_on_a_gpu(spec):
        spec["model"].update(framework="xgboost", algorithm="gradient_boosting",
                             params={"n_estimators": 50})
        spec["target"] = {"kind": "local", "training": {"gpu": 1}}

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # none visible, even on a GPU machine
    _, error, task_runs, _ = _failing_run(tmp_path, xgboost_on_a_gpu)
    assert isinstance(error, NoGpuError)
    assert str(error).startswith("target.training.gpu is 1 but no CUDA device is visible")
    assert str(error).endswith("set gpu: preferred to fall back to CPU")
    assert task_runs == {}  # decided before the first task: nothing ingested or trained
    outcome = json.loads((tmp_path / "state" / "training.json").read_text())
    assert outcome["status"] == "failed" and outcome["error_type"] == "NoGpuError"


@pytest.mark.engine
def test_failed_data_check_fails_the_flow_at_validate(tmp_path, prefect_api):
    def narrow_range(spec):
        spec["sources"][0]["checks"]["ranges"]["tenure_months"] = [0, 5]

    flows, error, task_runs, project = _failing_run(tmp_path, narrow_range)
    tenure = pd.read_parquet(project / "data" / "customers.parquet")["tenure_months"]
    outside = int(((tenure < 0) | (tenure > 5)).sum())
    assert isinstance(error, DataCheckError)
    assert str(error) == (
        f"data check failed: source 'customers', column 'tenure_months', ranges [0, 5]: "
        f"{outside} of {len(tenure)} rows outside (min {tenure.min()}, max {tenure.max()})")
    assert task_runs == {"ingest": ("COMPLETED", 1), "validate": ("FAILED", 1)}


@pytest.mark.engine
def test_retry_policy_skips_only_data_checks_and_gates(trained):
    from prefect.states import Failed

    # the generated tasks use the runtime's condition
    options = trained.flows.TASK_OPTIONS
    assert options["retry_condition_fn"] is retry_unless_final
    assert not retry_unless_final(None, None, Failed(data=DataCheckError("x")))
    assert not retry_unless_final(None, None, Failed(data=QualityGateError("x")))
    assert retry_unless_final(None, None, Failed(data=OSError("disk")))


def test_generated_pipelines_pass_ruff_check(tmp_path):
    """ruff's default rules, run from each compiled tree's root (so `<py>_system` counts as
    first-party, as it does for users)."""
    for spec in sorted(BLUEPRINTS.glob("*/mlstack.yaml")):
        system, _ = require_system(spec)
        out = tmp_path / spec.parent.name
        for path, content in compile_system(system).items():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(content)
        check = subprocess.run([_ruff(), "check", "--isolated", "--no-cache", "pipelines"],
                               cwd=out, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_cluster_targets_deploy_to_a_kubernetes_work_pool():
    systems = [require_system(p)[0] for p in sorted(BLUEPRINTS.glob("*/mlstack.yaml"))]
    for system in systems:
        tree = dict(PrefectBackend().render(system, CompileOptions()).items())
        config = yaml.safe_load(tree["pipelines/prefect.yaml"])
        pool = config["definitions"]["work_pool"]
        if system.target.kind == "local":
            assert pool["name"] == f"{system.name}-local"
            assert "namespace" not in pool["job_variables"]
        else:
            assert pool["name"] == f"{system.name}-kubernetes"
            assert pool["job_variables"]["namespace"] == system.target.namespace
        assert [d["entrypoint"] for d in config["deployments"]] == [
            "pipelines/flows.py:training_flow", "pipelines/flows.py:materialize_flow",
            "pipelines/monitoring.py:monitoring_flow"]
