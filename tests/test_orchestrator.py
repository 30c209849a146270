"""target.orchestrator: the default keeps every byte; kubeflow compiles the same task lists
into a Kubeflow Pipelines pipeline, airflow into TaskFlow DAGs, both over one shared steps
module (golden files below); lint refuses what cannot run; plan shows a change of
orchestrator as redeploying the pipelines, nothing retrained; the graph is the contract's
whichever orchestrator runs it.

The goldens are tests/goldens_kubeflow/<file>.golden (churn-k8s) and
tests/goldens_airflow/<file>.golden (churn): refresh them with
`MLSTACK_UPDATE_GOLDENS=1 .venv/bin/pytest tests/test_orchestrator.py` and review the diff.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from mlstack.codegen.backends import REGISTRY, load_backend
from mlstack.codegen.backends.airflow import CLEANUP_TASK
from mlstack.codegen.contract import MONITORING_TASKS, TRAINING_TASKS
from mlstack.codegen.generate import compile_system
from mlstack.codegen.graph import system_graph
from mlstack.frontend.analysis import analyze_spec
from mlstack.workspace.build import compile_options, compile_spec, compile_tree, spec_paths
from mlstack.workspace.manifest import build_manifest
from mlstack.workspace.plan import Consequence, plan
from tests.conftest import BLUEPRINTS, GENERATED

K8S = BLUEPRINTS / "churn-k8s"
CHURN = BLUEPRINTS / "churn"
GOLDENS = Path(__file__).parent / "goldens_kubeflow"
AIRFLOW_GOLDENS = Path(__file__).parent / "goldens_airflow"
KUBEFLOW_FILES = ("pipelines/kubeflow_pipeline.py", "churn_k8s_system/steps.py")
AIRFLOW_FILES = ("pipelines/airflow_dags.py", "pipelines/airflow_requirements.txt",
                 "churn_system/steps.py")
PREFECT_FILES = ("pipelines/flows.py", "pipelines/monitoring.py", "pipelines/prefect.yaml")


def variant(tmp: Path, blueprint: Path = K8S, **target) -> Path:
    """A copy of a blueprint (churn-k8s unless said; data included) with target keys set."""
    project = tmp / blueprint.name
    shutil.copytree(blueprint, project, ignore=shutil.ignore_patterns("build", "generated"))
    spec = project / "mlstack.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["target"].update(target)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def codes(spec: Path) -> list[tuple[str, str]]:
    return [(d.code, d.pointer) for d in analyze_spec(spec).diagnostics]


def test_the_default_is_prefect_and_leaves_no_trace(tmp_path):
    """Writing `orchestrator: prefect` is the default: same spec hash, same files, and the
    manifest of a spec that does not choose says nothing of it (the goldens keep their bytes)."""
    said = compile_tree(variant(tmp_path / "said", orchestrator="prefect"))
    unsaid = compile_tree(variant(tmp_path / "unsaid"))
    assert said.system.target.orchestrator == "prefect"
    assert said.tree.as_dict() == unsaid.tree.as_dict()
    assert "orchestrator" not in build_manifest(said.tree, said.system).system["target"]
    lock = json.loads((GENERATED / "churn-k8s" / "mlstack.lock.json").read_text())
    assert lock["spec_hash"] == said.system.spec_hash


def test_kubeflow_replaces_the_prefect_flows_and_matches_its_goldens(tmp_path):
    compiled = compile_tree(variant(tmp_path, orchestrator="kubeflow"))
    files = compiled.tree.as_dict()
    assert compiled.system.target.orchestrator == "kubeflow"
    assert not set(PREFECT_FILES) & set(files)
    # the settings the steps share stay, and the rest of the stack is the same system's
    assert "churn_k8s_system/pipeline.py" in files and "infra/kubernetes_stack.py" in files
    if os.environ.get("MLSTACK_UPDATE_GOLDENS"):
        for path in KUBEFLOW_FILES:
            (GOLDENS / f"{Path(path).name}.golden").write_bytes(files[path])
    for path in KUBEFLOW_FILES:
        assert files[path] == (GOLDENS / f"{Path(path).name}.golden").read_bytes(), path


def test_kubeflow_is_a_registered_backend_with_its_templates():
    backend = load_backend("kubeflow")
    assert "kubeflow" in REGISTRY
    root = Path(__file__).parent.parent / "templates"
    assert all((root / t).is_file() for t in backend.templates)


def _steps(source: bytes) -> list[str]:
    """The step names the generated steps module dispatches (its STEPS mapping's keys)."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.AnnAssign)
                and isinstance(n.target, ast.Name) and n.target.id == "STEPS")
    assert isinstance(node.value, ast.Dict)
    return [k.value for k in node.value.keys if isinstance(k, ast.Constant)]


def test_the_steps_are_the_contracts_tasks_and_the_pipeline_runs_each(tmp_path):
    files = compile_tree(variant(tmp_path, orchestrator="kubeflow")).tree.as_dict()
    assert _steps(files[KUBEFLOW_FILES[1]]) == [*TRAINING_TASKS, *MONITORING_TASKS]
    pipeline = files[KUBEFLOW_FILES[0]].decode()
    for task in (*TRAINING_TASKS, *MONITORING_TASKS):
        assert f'command=[*STEP, "{task}"]' in pipeline, task


@pytest.mark.parametrize(("target", "code", "pointer"), [
    ({"orchestrator": "kubeflow", "kind": "local"}, "MLS509", "/target/orchestrator"),
    ({"orchestrator": "kubeflow", "kind": "aws", "region": "eu-west-1"}, "MLS901",
     "/target/orchestrator"),
    ({"orchestrator": "kubeflow", "compute": {"engine": "ray"}}, "MLS901",
     "/target/orchestrator"),
    ({"orchestrator": "airflow", "compute": {"engine": "ray"}}, "MLS901", "/target/compute"),
    ({"orchestrator": "airflow", "kind": "aws", "region": "eu-west-1"}, "MLS901",
     "/target/orchestrator"),
])
def test_lint_refuses_what_an_orchestrator_cannot_run(tmp_path, target, code, pointer):
    spec = variant(tmp_path, **target)
    if target.get("kind") == "local":
        doc = yaml.safe_load(spec.read_text())
        doc["target"] = {"kind": "local", "orchestrator": "kubeflow"}
        spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert (code, pointer) in codes(spec)


def test_kubeflow_on_kubernetes_lints_clean(tmp_path):
    assert [c for c in codes(variant(tmp_path, orchestrator="kubeflow"))
            if c[1] == "/target/orchestrator"] == []


def test_a_change_of_orchestrator_alone_redeploys_the_pipelines_and_retrains_nothing(tmp_path):
    spec = variant(tmp_path)
    compile_spec(spec)
    doc = yaml.safe_load(spec.read_text())
    doc["target"]["orchestrator"] = "kubeflow"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    compiled = compile_tree(spec)
    p = plan(compiled.system, compiled.tree, compiled.paths.out_dir)
    assert {(r.kind, r.action, r.consequence) for r in p.resources} == {
        ("pipelines", "update", Consequence.REDEPLOY_PIPELINES)}
    [change] = p.resources[0].properties
    assert (change.name, change.old, change.new) == ("orchestrator", "prefect", "kubeflow")
    assert Consequence.RETRAIN not in p.consequences
    by_path = {f.path: f.action for f in p.file_changes}
    assert all(by_path[f] == "delete" for f in PREFECT_FILES)
    assert all(by_path[f] == "create" for f in KUBEFLOW_FILES)


def test_the_graph_is_the_contracts_whichever_orchestrator_runs_it(tmp_path):
    prefect = compile_tree(variant(tmp_path / "a")).system
    kubeflow = compile_tree(variant(tmp_path / "b", orchestrator="kubeflow")).system
    assert system_graph(prefect) == system_graph(kubeflow)
    flow = [n.label for n in system_graph(kubeflow).nodes if n.group == "flow"]
    assert flow == list(TRAINING_TASKS)


# -- airflow -------------------------------------------------------------------------------
def airflow_refusals(system) -> list[tuple[str, str]]:
    """What lint refuses of an airflow spec: the orchestrator off the local target."""
    return ([("MLS901", "/target/orchestrator")] if system.target.kind not in (
        "local", "kubernetes") else [])


def airflow_compiled(spec: Path):
    """The IR and tree of an airflow spec. Lint takes airflow on the local target (deploy
    runs the DAGs and the scheduled retrain) and refuses airflow on the others (MLS901: no
    stack runs Airflow yet); this compiles what analysis resolved (the training DAG's
    schedule too), after checking those refusals are the only errors."""
    analysis = analyze_spec(spec)
    assert [(d.code, d.pointer) for d in analysis.errors] == airflow_refusals(analysis.system)
    return analysis.system, compile_system(analysis.system, compile_options(spec_paths(spec)))


def test_airflow_replaces_the_prefect_flows_and_matches_its_goldens(tmp_path):
    system, tree = airflow_compiled(variant(tmp_path, CHURN, orchestrator="airflow"))
    files = tree.as_dict()
    assert system.target.orchestrator == "airflow"
    assert not set(PREFECT_FILES) & set(files)
    assert not {"pipelines/kubeflow_pipeline.py"} & set(files)
    assert "churn_system/pipeline.py" in files  # the settings the steps share
    if os.environ.get("MLSTACK_UPDATE_GOLDENS"):
        AIRFLOW_GOLDENS.mkdir(exist_ok=True)
        for path in AIRFLOW_FILES:
            (AIRFLOW_GOLDENS / f"{Path(path).name}.golden").write_bytes(files[path])
    for path in AIRFLOW_FILES:
        assert files[path] == (AIRFLOW_GOLDENS / f"{Path(path).name}.golden").read_bytes(), path
    # compiled twice: the same bytes (no timestamp, no absolute path)
    assert airflow_compiled(variant(tmp_path / "again", CHURN, orchestrator="airflow"))[
        1].as_dict() == files
    assert str(tmp_path).encode() not in b"".join(files[p] for p in AIRFLOW_FILES)


def test_airflow_is_a_registered_backend_with_its_templates():
    backend = load_backend("airflow")
    root = Path(__file__).parent.parent / "templates"
    assert all((root / t).is_file() for t in backend.templates)


def _functions(source: bytes) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}


def _decorator_names(node: ast.FunctionDef) -> list[str]:
    names = []
    for d in node.decorator_list:
        d = d.func if isinstance(d, ast.Call) else d
        names.append(d.id if isinstance(d, ast.Name) else ast.unparse(d))
    return names


def test_the_dags_are_taskflow_with_one_task_per_contract_task_calling_its_step(tmp_path):
    _, tree = airflow_compiled(variant(tmp_path, CHURN, orchestrator="airflow"))
    files = tree.as_dict()
    dags = files["pipelines/airflow_dags.py"]
    assert b"from airflow.sdk import dag, get_current_context, task" in dags
    functions = _functions(dags)
    tasks = [name for name, f in functions.items() if _decorator_names(f) == ["task"]]
    assert tasks == [*dict.fromkeys((*TRAINING_TASKS, *MONITORING_TASKS)), CLEANUP_TASK]
    for name in (*TRAINING_TASKS, *MONITORING_TASKS):
        # each task runs the step of its own name, and the steps module defines it
        calls = [c for c in ast.walk(functions[name]) if isinstance(c, ast.Call)
                 and isinstance(c.func, ast.Name) and c.func.id == "run_step"]
        assert [c.args[0].value for c in calls] == [name], name
    assert _steps(files["churn_system/steps.py"]) == [*TRAINING_TASKS, *MONITORING_TASKS]
    dag_functions = [name for name, f in functions.items() if _decorator_names(f) == ["dag"]]
    assert dag_functions == ["churn_training", "churn_materialize", "churn_monitoring"]


def test_kubeflow_and_airflow_share_one_steps_module(tmp_path):
    """The same system's steps, whichever runs them: only the docstring's paragraph on the
    orchestrator differs."""
    _, airflow = airflow_compiled(variant(tmp_path / "a", orchestrator="airflow"))
    kubeflow = compile_tree(variant(tmp_path / "k", orchestrator="kubeflow")).tree
    path = "churn_k8s_system/steps.py"

    def code(tree) -> str:
        module = ast.parse(tree.as_dict()[path])
        module.body = module.body[1:]  # the docstring
        return ast.unparse(module)

    assert code(airflow) == code(kubeflow)
    assert airflow.as_dict()[path] != kubeflow.as_dict()[path]


def test_airflow_lints_clean_on_the_local_target_and_is_refused_on_the_others(tmp_path):
    """`mlstack deploy` runs the DAGs locally under the project's own Airflow, the
    scheduled retrain as mlstack's own DAG (tests/engine/test_airflow_local.py); the
    cluster targets' stacks run no Airflow yet."""
    scheduled = variant(tmp_path / "local", CHURN, orchestrator="airflow")
    analysis = analyze_spec(scheduled)
    assert analysis.system.training.schedule == "@daily"  # the blueprint's daily retrain
    assert analysis.errors == []
    doc = yaml.safe_load(scheduled.read_text())
    for schedule in ("*/2 * * * *", "0 3 * * 1-5", "15,45 */6 1 * *"):
        doc["training"]["schedule"] = schedule
        scheduled.write_text(yaml.safe_dump(doc, sort_keys=False))
        assert analyze_spec(scheduled).errors == [], schedule
    del doc["training"]["schedule"]
    scheduled.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert analyze_spec(scheduled).errors == []
    # on kubernetes the stack deploys Airflow (tests/engine/test_infra_k8s_airflow.py)
    assert analyze_spec(variant(tmp_path / "k8s", orchestrator="airflow")).errors == []
    analysis = analyze_spec(variant(tmp_path / "aws", orchestrator="airflow", kind="aws",
                                    region="eu-west-1"))
    [refused] = analysis.errors
    assert (refused.code, refused.pointer) == ("MLS901", "/target/orchestrator")
    assert refused.location.line > 1  # located at the key the user wrote
    assert "aws target" in refused.message


def _planned_switch_to_airflow(spec):
    """The plan of the spec, compiled as it is, then switched to orchestrator airflow."""
    compile_spec(spec)
    doc = yaml.safe_load(spec.read_text())
    doc["target"]["orchestrator"] = "airflow"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    system, tree = airflow_compiled(spec)
    return plan(system, tree, spec_paths(spec).out_dir)


def test_a_change_to_airflow_alone_redeploys_the_pipelines_and_retrains_nothing(tmp_path):
    p = _planned_switch_to_airflow(variant(tmp_path, CHURN))
    assert {(r.kind, r.action, r.consequence) for r in p.resources} == {
        ("pipelines", "update", Consequence.REDEPLOY_PIPELINES)}
    [change] = p.resources[0].properties
    assert (change.name, change.old, change.new) == ("orchestrator", "prefect", "airflow")
    assert Consequence.RETRAIN not in p.consequences
    by_path = {f.path: f.action for f in p.file_changes}
    assert all(by_path[f] == "delete" for f in PREFECT_FILES)
    assert all(by_path[f] == "create" for f in AIRFLOW_FILES)


def test_the_graph_is_the_same_with_airflow(tmp_path):
    prefect = compile_tree(variant(tmp_path / "a", CHURN)).system
    airflow, _ = airflow_compiled(variant(tmp_path / "b", CHURN, orchestrator="airflow"))
    assert system_graph(prefect) == system_graph(airflow)


def test_the_airflow_environment_pins_the_models_framework_too(tmp_path):
    ranking, tree = airflow_compiled(variant(tmp_path, BLUEPRINTS / "search-ranking",
                                             orchestrator="airflow"))
    assert ranking.model.framework == "lightgbm"
    lines = tree.as_dict()["pipelines/airflow_requirements.txt"].decode().splitlines()
    assert "lightgbm==4.7.0" in lines and "apache-airflow==3.3.2" in lines
    assert all("==" in line for line in lines if not line.startswith("#"))


# -- airflow on kubernetes: the stack deploys Airflow's chart ------------------------------
AIRFLOW_K8S_FILES = {"pipelines/airflow_dags.py": "airflow_dags_kubernetes.py",
                     "pipelines/airflow_requirements.txt": "airflow_requirements_kubernetes.txt"}


def test_airflow_on_kubernetes_runs_each_step_as_a_pod_and_matches_its_goldens(tmp_path):
    """The DAG file differs on kubernetes (each task a KubernetesPodOperator running its
    step in the service image); its goldens, and the same bytes twice."""
    system, tree = airflow_compiled(variant(tmp_path, orchestrator="airflow"))
    files = tree.as_dict()
    assert (system.target.kind, system.target.orchestrator) == ("kubernetes", "airflow")
    dags = files["pipelines/airflow_dags.py"]
    assert b"from airflow.providers.cncf.kubernetes.operators.pod import " \
           b"KubernetesPodOperator" in dags
    assert b"get_current_context" not in dags  # nothing runs in the Airflow worker
    if os.environ.get("MLSTACK_UPDATE_GOLDENS"):
        for path, golden in AIRFLOW_K8S_FILES.items():
            (AIRFLOW_GOLDENS / f"{golden}.golden").write_bytes(files[path])
    for path, golden in AIRFLOW_K8S_FILES.items():
        assert files[path] == (AIRFLOW_GOLDENS / f"{golden}.golden").read_bytes(), path
    again = airflow_compiled(variant(tmp_path / "again", orchestrator="airflow"))[1]
    assert again.as_dict() == files


def test_a_change_to_airflow_on_kubernetes_plans_the_chart_in_place_of_the_prefect_worker(
        tmp_path):
    p = _planned_switch_to_airflow(variant(tmp_path))
    changes = {c.address: c.action for c in p.infra.changes}
    assert changes == {
        "helm_release.airflow": "create", "kubernetes_config_map_v1.airflow_dags": "create",
        "kubernetes_persistent_volume_claim_v1.pipeline_data": "create",
        # the service image's tag is the spec's hash, which the orchestrator is part of
        "kubernetes_deployment_v1.serving": "update",
        "kubernetes_config_map_v1.training_job_template": "delete",
        **{f"{t}.prefect_worker": "delete" for t in (
            "kubernetes_deployment_v1", "kubernetes_role_v1", "kubernetes_role_binding_v1",
            "kubernetes_service_account_v1")}}
    assert Consequence.RETRAIN not in p.consequences
