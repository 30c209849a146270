"""target.compute: validated like the rest of the spec, resolved into a placement per offline
step (what `plan --explain` prints), checked by lint, and invisible when absent."""

from __future__ import annotations

import copy

import pytest
import yaml

from mlstack.cli.main import main
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.loader import load_spec_file
from mlstack.workspace.plan import diff_systems
from tests.conftest import BLUEPRINTS

CHURN = load_spec_file(BLUEPRINTS / "churn" / "mlstack.yaml").data
FRAUD = load_spec_file(BLUEPRINTS / "fraud-gpu" / "mlstack.yaml").data
RANKING = load_spec_file(BLUEPRINTS / "search-ranking" / "mlstack.yaml").data
MLP = load_spec_file(BLUEPRINTS / "churn-mlp" / "mlstack.yaml").data


def _with_compute(doc: dict, **compute) -> dict:
    doc = copy.deepcopy(doc)
    doc["target"] = {**doc.get("target", {}), "compute": {"engine": "ray", **compute}}
    doc["target"].get("training", {}).pop("gpu", None)  # Ray workers have no GPU (MLS901)
    return doc


def _analyze(doc: dict, tmp_path, blueprint: str = "churn"):
    folder = tmp_path / "project"
    if not folder.exists():
        import shutil

        shutil.copytree(BLUEPRINTS / blueprint, folder)
    spec = folder / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return analyze_spec(spec)


def test_defaults_resolve_to_two_workers_and_a_placement_per_step(tmp_path):
    analysis = _analyze(_with_compute(CHURN), tmp_path)
    assert analysis.diagnostics == [] or all(d.severity.value != "error"
                                             for d in analysis.diagnostics)
    c = analysis.system.target.compute
    assert (c.engine, c.address, c.workers, c.worker.cpu, c.worker.memory_mib) == (
        "ray", "local", 2, 1, 2048)
    assert {s.step: s.runs_on for s in c.steps} == {
        "ingest": "ray_tasks", "validate": "ray_tasks", "materialize": "ray_tasks",
        "training_set": "ray_data", "train": "ray_task", "evaluate": "ray_task"}
    assert c.at == "/target/compute"
    derived = {d.setting: d for d in analysis.system.derivations}
    assert derived["target.compute.steps.train"].value == "\"ray_task\""  # JSON, as printed
    assert "no scikit-learn trainer" in derived["target.compute.steps.train"].reason
    assert "(2)" in derived["target.compute.steps.ingest"].reason  # two file sources


@pytest.mark.parametrize(("doc", "blueprint", "engine", "why"), [
    (FRAUD, "fraud-gpu", "ray_train", "xgboost trains data-parallel with Ray Train"),
    (RANKING, "search-ranking", "ray_task", "a ranker needs every query group"),
    (MLP, "churn-mlp", "ray_task", "TorchTrainer needs a DDP training loop"),
])
def test_training_runs_on_ray_train_only_where_the_framework_can(tmp_path, doc, blueprint,
                                                                 engine, why):
    analysis = _analyze(_with_compute(doc), tmp_path, blueprint)
    assert analysis.system is not None, analysis.diagnostics
    c = analysis.system.target.compute
    train = next(s for s in c.steps if s.step == "train")
    assert (c.train_engine, train.runs_on) == (engine, engine)
    assert why in train.reason


def test_with_one_worker_materialization_stays_in_the_flows_process(tmp_path):
    c = _analyze(_with_compute(CHURN, workers=1), tmp_path).system.target.compute
    step = next(s for s in c.steps if s.step == "materialize")
    assert step.runs_on == "flow" and "with one worker" in step.reason


def test_lightgbm_classifier_trains_on_ray_train(tmp_path):
    doc = _with_compute(CHURN)
    doc["model"]["framework"] = "lightgbm"
    doc["model"]["algorithm"] = "gradient_boosting"
    doc["model"]["params"] = {"n_estimators": 50}
    analysis = _analyze(doc, tmp_path)
    assert analysis.system is not None, analysis.diagnostics
    assert analysis.system.target.compute.train_engine == "ray_train"


def test_plan_explain_says_where_each_step_runs(tmp_path, capsys):
    _analyze(_with_compute(CHURN, workers=3), tmp_path)
    code = main(["plan", str(tmp_path / "project" / "mlstack.yaml"), "--explain"])
    out = capsys.readouterr().out
    assert code == 0
    for step in ("ingest", "validate", "materialize", "training_set", "train", "evaluate"):
        assert f"target.compute.steps.{step} = " in out
    assert "Feast's Ray offline store" in out and "RayTaskRunner" in out


@pytest.mark.parametrize(("compute", "message"), [
    ({"address": "http://head:8265"}, "a Ray address: 'local' or 'ray://host:port'"),
    ({"workers": 0}, "must be at least 1"),
    ({"worker": {"memory": "2GB"}}, "is not a memory size"),
    ({"worker": {"gpus": 1}}, "gpus"),
    ({"engine": "spark"}, "ray"),
])
def test_a_bad_compute_section_is_an_error_at_its_location(tmp_path, compute, message):
    analysis = _analyze(_with_compute(CHURN, **compute), tmp_path)
    errors = [d for d in analysis.diagnostics if d.severity.value == "error"]
    assert analysis.system is None and errors
    assert any(message in d.message for d in errors), [d.message for d in errors]
    assert all(d.pointer.startswith("/target/compute") for d in errors)
    assert all(d.location.line and d.location.column for d in errors)


def test_lint_refuses_what_the_ray_path_cannot_carry_out(tmp_path):
    doc = _with_compute(CHURN, worker={"memory": "256Mi"})
    doc["sources"][0]["kind"] = "csv"
    doc["target"]["training"] = {"gpu": "preferred"}
    analysis = _analyze(doc, tmp_path)
    found = {(d.code, d.pointer) for d in analysis.diagnostics}
    assert ("MLS508", "/target/compute/worker/memory") in found
    assert ("MLS901", "/sources/0/kind") in found
    assert ("MLS901", "/target/training/gpu") in found


def test_without_compute_nothing_is_placed_and_the_plan_lists_the_cluster(tmp_path):
    plain = _analyze(copy.deepcopy(CHURN), tmp_path).system
    assert plain.target.compute is None
    assert not [d for d in plain.derivations if d.setting.startswith("target.compute")]
    ray = _analyze(_with_compute(CHURN), tmp_path).system
    assert plain.spec_hash != ray.spec_hash
    changes = [c for c in diff_systems(plain, ray) if c.kind == "compute"]
    assert len(changes) == 1 and changes[0].action.value == "create"
    assert changes[0].consequence.value == "redeploy pipelines"
