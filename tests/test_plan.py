"""`plan` on a changed spec lists exactly the file and resource changes; the compile and plan
verbs' exit codes; `--json` and `--explain`."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mlstack.cli.main import main
from mlstack.workspace.build import compile_options, compile_spec, compile_tree, spec_paths
from mlstack.workspace.manifest import MANIFEST_NAME, build_manifest
from mlstack.workspace.plan import (
    Consequence,
    plan,
)
from tests.conftest import BLUEPRINTS

CHURN = BLUEPRINTS / "churn" / "mlstack.yaml"


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the churn blueprint's spec, compiled once into project/build."""
    spec = tmp_path / "churn" / "mlstack.yaml"
    spec.parent.mkdir()
    shutil.copy(CHURN, spec)
    compile_spec(spec)
    return spec


def edit_spec(spec: Path, change) -> None:
    data = yaml.safe_load(spec.read_text())
    change(data)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))


def changed_files(spec: Path) -> list[str]:
    """Files whose bytes differ between what is in build/ now and a fresh compile: computed
    independently of plan, by compiling and comparing bytes."""
    compiled = compile_tree(spec)
    out = compiled.paths.out_dir
    on_disk = {p.relative_to(out).as_posix(): p.read_bytes()
               for p in out.rglob("*") if p.is_file()}
    new = {**compiled.tree.as_dict(),
           MANIFEST_NAME: build_manifest(compiled.tree, compiled.system).to_bytes()}
    return sorted(p for p in set(new) | set(on_disk) if new.get(p) != on_disk.get(p))


def plan_for(spec: Path):
    compiled = compile_tree(spec)
    return plan(compiled.system, compiled.tree, compiled.paths.out_dir), compiled


def summary(p) -> set[tuple[str, str, str, str]]:
    return {(r.kind, r.name, r.action, r.consequence) for r in p.resources}


def test_unchanged_spec_plans_no_change(project):
    p, compiled = plan_for(project)
    assert not p.has_changes and p.resources == () and p.file_changes == []
    assert p.baseline == "manifest" and p.previous_spec_hash == compiled.system.spec_hash
    assert len(p.files) == len(compiled.tree) + 1  # every file and the manifest: unchanged


def test_first_plan_creates_everything(tmp_path):
    p, compiled = plan_for_out(CHURN, tmp_path / "fresh")
    assert p.baseline == "none" and p.previous_spec_hash is None
    assert [f.path for f in p.files if f.action == "create"] == [
        *compiled.tree.paths(), MANIFEST_NAME]
    assert {r.action for r in p.resources} == {"create"}
    assert ("model", "churn", "create", Consequence.RETRAIN) in summary(p)
    assert not (tmp_path / "fresh").exists()


def plan_for_out(spec, out):
    compiled = compile_tree(spec, out)
    return plan(compiled.system, compiled.tree, out), compiled


def test_adding_a_feature_retrains_and_lists_the_files(project):
    def add_feature(data):
        data["features"]["transforms"].append(
            {"name": "calls_per_tenure", "expr": "support_calls / (tenure_months + 1)"})
        data["model"]["features"].append("calls_per_tenure")

    before = plan_for(project)[1].system
    edit_spec(project, add_feature)
    expected_files = changed_files(project)
    p, compiled = plan_for(project)
    assert sorted(f.path for f in p.file_changes) == expected_files
    assert {f.action for f in p.file_changes} == {"update"}
    pkg = f"{compiled.system.python_name}_system"
    assert {f"{pkg}/features.py", f"{pkg}/transforms.py", MANIFEST_NAME} <= set(expected_files)
    assert ("transform", "calls_per_tenure", "create", Consequence.RETRAIN) in summary(p)
    model = next(r for r in p.resources if r.kind == "model")
    assert (model.action, model.consequence) == ("update", Consequence.RETRAIN)
    assert [(c.name, c.old, c.new) for c in model.properties] == [
        ("features", [f.ref for f in before.model.features],
         [f.ref for f in before.model.features] + ["calls_per_tenure"])]
    # a new on-demand feature reads views that exist: no view changes, the API is the same
    assert Consequence.REMATERIALIZE not in p.consequences and Consequence.BREAKING_API not in p.consequences
    assert not any(r.kind in ("feature_view", "request_schema", "service") for r in p.resources)


def test_changing_a_gate_only_re_evaluates(project):
    def raise_gate(data):
        data["evaluation"]["gates"] = {"auc": ">= 0.85"}

    edit_spec(project, raise_gate)
    expected_files = changed_files(project)
    p, _ = plan_for(project)
    assert summary(p) == {("evaluation", "churn", "update", Consequence.REEVALUATE)}
    [gates] = p.resources[0].properties
    assert (gates.name, gates.old, gates.new) == ("gates", ["auc >= 0.8"], ["auc >= 0.85"])
    assert sorted(f.path for f in p.file_changes) == expected_files
    assert not any(f.path.startswith("feature_repo/") for f in p.file_changes)


def test_raising_p99_rederives_batching_and_changes_the_service(project):
    def raise_p99(data):
        data["slos"]["latency"]["p99_ms"] = 300

    before = plan_for(project)[1]
    edit_spec(project, raise_p99)
    expected_files = changed_files(project)
    p, after = plan_for(project)
    assert summary(p) == {("slos", "churn", "update", Consequence.REVERIFY_SLOS),
                          ("service", "churn", "update", Consequence.REDEPLOY_SERVICE)}
    service = next(r for r in p.resources if r.kind == "service")
    old_b, new_b = before.system.serving.batching, after.system.serving.batching
    assert new_b.max_latency_ms > old_b.max_latency_ms
    assert ("batching.max_latency_ms", old_b.max_latency_ms, new_b.max_latency_ms) in {
        (c.name, c.old, c.new) for c in service.properties}
    derivation = next(d for d in p.derivations if d.setting == "serving.batching.max_latency_ms")
    assert derivation.previous == str(old_b.max_latency_ms)
    assert derivation.value == str(new_b.max_latency_ms) and "p99 300" in derivation.reason
    assert sorted(f.path for f in p.file_changes) == expected_files
    if any(path.startswith("service/") for path in after.tree.paths()):  # bentoml backend
        assert any(path.startswith("service/") for path in expected_files)


def test_changing_the_request_schema_is_a_breaking_api_change(project):
    def rename_key(data):
        text = json.dumps(data).replace("customer_id", "account_id")
        data.clear()
        data.update(json.loads(text))

    edit_spec(project, rename_key)
    p, _ = plan_for(project)
    schema = next(r for r in p.resources if r.kind == "request_schema")
    assert schema.consequence == Consequence.BREAKING_API
    assert [(c.name, c.old, c.new) for c in schema.properties] == [
        ("request_keys.account_id", None, "int64"), ("request_keys.customer_id", "int64", None)]
    assert ("feature_view", "customer_profile", "update", Consequence.REMATERIALIZE) in summary(p)


def test_cli_plan_exit_codes(tmp_path, capsys):
    spec = tmp_path / "p" / "mlstack.yaml"
    spec.parent.mkdir()
    shutil.copy(CHURN, spec)
    args = ["plan", str(spec), "--detailed-exitcode"]
    assert main(args) == 2  # nothing compiled yet: everything to create
    assert main(["plan", str(spec)]) == 0  # changes, but no --detailed-exitcode
    assert main(["compile", str(spec)]) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "No changes" in capsys.readouterr().out
    edit_spec(spec, lambda d: d["evaluation"].update(gates={"auc": ">= 0.9"}))
    assert main(args) == 2
    out = capsys.readouterr().out
    assert "~ evaluation churn" in out and "-> re-evaluate" in out
    spec.write_text(spec.read_text().replace("gradient_boosting", "gradient_boostin"))
    assert main(args) == 1  # a spec error
    assert main(["plan", str(tmp_path / "missing.yaml"), "--detailed-exitcode"]) == 1
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2  # usage error without it
    assert main([*args, "--no-such-option"]) == 1


def test_cli_plan_json_and_explain(project, capsys):
    edit_spec(project, lambda d: d["slos"]["latency"].update(p99_ms=300))
    assert main(["plan", str(project), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["has_changes"] and data["baseline"] == "manifest"
    assert {(r["kind"], r["consequence"]) for r in data["resources"]} == {
        ("slos", Consequence.REVERIFY_SLOS), ("service", Consequence.REDEPLOY_SERVICE)}
    assert MANIFEST_NAME in {f["path"] for f in data["files"] if f["action"] == "update"}
    assert main(["plan", str(project), "--explain"]) == 0
    out = capsys.readouterr().out
    system = compile_tree(project).system
    for d in system.derivations:
        assert f"{d.setting} = {d.value}" in out and d.reason in out
    assert "(was " in out


def test_cli_compile_refuses_edited_file_then_force(project, capsys):
    out = project.parent / "build"
    target = next(p for p in sorted(out.rglob("*.py")))
    target.write_text(target.read_text() + "# my edit\n")
    edited = target.read_bytes()
    assert main(["compile", str(project)]) == 1
    err = capsys.readouterr().err
    assert target.relative_to(out).as_posix() in err and "--force" in err
    assert target.read_bytes() == edited
    p, _ = plan_for(project)
    assert [f.path for f in p.conflicts] == [target.relative_to(out).as_posix()]
    assert main(["compile", str(project), "--dry-run", "--force"]) == 0
    assert target.read_bytes() == edited
    assert main(["compile", str(project), "--force"]) == 0
    assert target.read_bytes() != edited
    assert not plan_for(project)[0].has_changes


def test_project_dir_is_relative_from_the_output_folder(tmp_path):
    assert compile_options(spec_paths(CHURN)).project_dir == ".."
    generated = BLUEPRINTS.parent / "generated" / "churn"
    assert compile_options(spec_paths(CHURN, generated)).project_dir == "../../blueprints/churn"
    deep = tmp_path / "a" / "b"
    assert compile_options(spec_paths(tmp_path / "mlstack.yaml", deep)).project_dir == "../.."
    assert compile_options(spec_paths(tmp_path / "mlstack.yaml", tmp_path)).project_dir == "."


# -- infrastructure and cost (kubernetes/aws targets) ---------------------------------------
FRAUD = BLUEPRINTS / "fraud-gpu"


@pytest.fixture
def fraud(tmp_path) -> Path:
    """A copy of the fraud-gpu blueprint (aws target), compiled once into its build/."""
    shutil.copytree(FRAUD, tmp_path / "fraud-gpu")
    spec = tmp_path / "fraud-gpu" / "mlstack.yaml"
    compile_spec(spec)
    return spec


def infra_summary(p) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"create": [], "update": [], "delete": []}
    for change in p.infra.changes:
        out[change.action].append(change.address)
    return out


def test_fraud_gpu_plan_lists_its_infra_and_estimates_the_cost(tmp_path, capsys):
    from mlstack.codegen.backends.infra_costs import estimate_monthly_cost, infra_resources

    p, compiled = plan_for_out(FRAUD / "mlstack.yaml", tmp_path / "fresh")
    system = compiled.system
    expected = [f"{t}.{n}" for t, n in infra_resources(system)]
    assert len(expected) > 30 and p.infra.stack == f"{system.name}-aws"
    assert infra_summary(p) == {"create": expected, "update": [], "delete": []}
    assert p.cost == estimate_monthly_cost(system) and p.previous_cost is None
    assert p.cost.label == "estimate" and 0 < p.cost.monthly_min_usd < p.cost.monthly_max_usd

    assert main(["plan", str(FRAUD), "-o", str(tmp_path / "fresh")]) == 0
    out = capsys.readouterr().out
    assert all(f"  + {address}\n" in out for address in expected)
    assert f"Infrastructure: {len(expected)} to add, 0 to change, 0 to destroy" in out
    assert f"an estimate from price table {p.cost.price_table}" in out
    for line in p.cost.lines:
        assert line.item in out and line.detail in out
    assert f"${p.cost.monthly_min_usd:,.2f} - ${p.cost.monthly_max_usd:,.2f}" in out

    assert main(["plan", str(FRAUD), "-o", str(tmp_path / "fresh"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["address"] for c in data["infra"]["changes"]] == expected
    assert (data["infra"]["add"], data["infra"]["change"], data["infra"]["destroy"]) == (
        len(expected), 0, 0)
    assert data["cost"]["label"] == "estimate"
    assert data["cost"]["price_table"] == p.cost.price_table
    assert data["cost"]["monthly_max_usd"] == p.cost.monthly_max_usd
    assert len(data["cost"]["lines"]) == len(p.cost.lines)


def test_local_plan_has_no_infra_and_no_cost(project):
    p, _ = plan_for(project)
    assert p.infra.stack is None and p.infra.changes == () and p.cost is None
    assert p.as_dict()["cost"] is None


def test_unchanged_cluster_spec_plans_no_infra_change(fraud):
    p, compiled = plan_for(fraud)
    assert not p.has_changes and p.infra.changes == ()
    from mlstack.codegen.backends.infra_costs import infra_resources

    assert p.infra.unchanged == len(infra_resources(compiled.system))
    assert p.previous_cost == p.cost


def test_raising_replicas_max_changes_the_serving_node_group_and_the_cost(fraud, capsys):
    before = plan_for(fraud)[0]
    old_max = yaml.safe_load(fraud.read_text())["target"]["serving"]["replicas"]["max"]
    edit_spec(fraud, lambda d: d["target"]["serving"]["replicas"].update(max=old_max * 2))
    p, _ = plan_for(fraud)
    assert infra_summary(p) == {"create": [], "update": ["aws_eks_node_group.serving_nodes"],
                                "delete": []}
    [change] = p.infra.changes
    assert [(c.name, c.old, c.new) for c in change.properties] == [
        ("serving_nodes.max", old_max, old_max * 2)]
    assert p.previous_cost == before.cost
    assert p.cost.monthly_min_usd == before.cost.monthly_min_usd
    assert p.cost.monthly_max_usd > before.cost.monthly_max_usd
    serving = {line.item: line for line in p.cost.lines}["serving nodes"]
    old_serving = {line.item: line for line in before.cost.lines}["serving nodes"]
    assert serving.monthly_max_usd == pytest.approx(old_serving.monthly_max_usd * 2, abs=0.02)
    assert "re-provision infrastructure" in p.consequences

    assert main(["plan", str(fraud)]) == 0
    out = capsys.readouterr().out
    assert "  ~ aws_eks_node_group.serving_nodes\n" in out
    assert f"serving_nodes.max: {old_max} -> {old_max * 2}" in out
    assert (f"(was ${before.cost.monthly_min_usd:,.2f} - "
            f"${before.cost.monthly_max_usd:,.2f})") in out
    assert "Infrastructure: 0 to add, 1 to change, 0 to destroy" in out


def test_dynamodb_to_redis_destroys_the_tables_and_adds_elasticache(fraud):
    before, compiled = plan_for(fraud)
    views = sorted(v.name for v in compiled.system.feature_views if v.online)
    edit_spec(fraud, lambda d: d["target"].update(online_store="redis"))
    p, _ = plan_for(fraud)
    changes = infra_summary(p)
    assert changes["delete"] == [f"aws_dynamodb_table.online_{v}" for v in views]
    assert changes["create"] == ["aws_elasticache_replication_group.online_store",
                                 "aws_elasticache_subnet_group.redis_subnets",
                                 "aws_security_group.redis"]
    # the pod roles lose their DynamoDB grants
    assert changes["update"] == ["aws_iam_role_policy.serving_pods_access",
                                 "aws_iam_role_policy.training_pods_access"]
    items, old_items = ({line.item for line in c.lines} for c in (p.cost, before.cost))
    assert "DynamoDB" in old_items - items and "ElastiCache Redis" in items - old_items


@pytest.mark.parametrize(("blueprint", "device", "why"), [
    ("fraud-gpu", "cuda if visible, else cpu", "gpu: preferred: xgboost trains on a CUDA device"),
    ("search-ranking", "cpu", "target.training.gpu is 0"),
    ("churn-mlp", "cuda if visible, else cpu", "pytorch trains on a CUDA device when one"),
])
def test_plan_explain_says_which_device_training_uses(blueprint, device, why, capsys):
    assert main(["plan", str(BLUEPRINTS / blueprint / "mlstack.yaml"), "--explain"]) in (0, 2)
    out = capsys.readouterr().out
    assert f'target.training.device = "{device}"' in out and why in out


def test_plan_explain_for_a_required_gpu_and_a_cpu_framework(tmp_path, capsys):
    spec = tmp_path / "fraud" / "mlstack.yaml"
    shutil.copytree(BLUEPRINTS / "fraud-gpu", spec.parent)
    spec.write_text(spec.read_text().replace("gpu: preferred", "gpu: 1"))
    main(["plan", str(spec), "--explain"])
    assert ("target.training.gpu is 1: xgboost trains on a CUDA device; the flow stops before "
            "training when none is visible") in capsys.readouterr().out
    spec.write_text(spec.read_text().replace("framework: xgboost", "framework: sklearn")
                    .replace("algorithm: gradient_boosting", "algorithm: hist_gradient_boosting")
                    .replace("n_estimators: 300, max_depth: 6, learning_rate: 0.05, subsample: "
                             "0.8,\n           colsample_bytree: 0.8", "max_iter: 100"))
    main(["plan", str(spec), "--explain"])
    assert ("sklearn trains on the CPU; the GPU of target.training is reserved but unused"
            in capsys.readouterr().out)


def test_a_cluster_plan_says_plainly_what_the_generated_stack_does_not_do_yet(tmp_path, capsys):
    """fraud-gpu (aws) watches drift, freshness and model age and retrains on a schedule:
    the plan names each part the local target has and the aws stack lacks; a local plan
    names none."""
    from mlstack.cli.main import main

    p, _ = plan_for_out(FRAUD / "mlstack.yaml", tmp_path / "fresh")
    assert [g.split(":")[0] for g in p.gaps] == [
        "export the monitoring flow's report as metrics",
        "roll a scheduled retrain's model out"]
    assert "its drift, feature freshness, model age alerts" in p.gaps[0]
    assert p.as_dict()["gaps"] == list(p.gaps)
    assert main(["plan", str(FRAUD / "mlstack.yaml"), "-o", str(tmp_path / "fresh")]) in (0, 2)
    out = capsys.readouterr().out
    assert "Not on aws yet (the local target does each):\n  - export the monitoring" in out
    local, _ = plan_for_out(BLUEPRINTS / "churn" / "mlstack.yaml", tmp_path / "churn")
    assert local.gaps == () and local.as_dict()["gaps"] == []


def test_a_kubernetes_plan_has_no_export_gap_its_stack_pushes_the_gauges(tmp_path, capsys):
    """churn-k8s watches drift, freshness and model age, like fraud-gpu: its stack runs a
    Pushgateway the monitoring flow pushes the report's gauges to, so only the other gaps are
    named; the same spec on aws names the export gap."""
    from mlstack.cli.main import main

    spec = BLUEPRINTS / "churn-k8s" / "mlstack.yaml"
    p, _ = plan_for_out(spec, tmp_path / "k8s")
    assert p.target == "kubernetes"
    assert [g.split(":")[0] for g in p.gaps] == ["roll a scheduled retrain's model out"]
    assert main(["plan", str(spec), "-o", str(tmp_path / "k8s")]) in (0, 2)
    out = capsys.readouterr().out
    assert "Not on kubernetes yet" in out and "export the monitoring" not in out
    # the same spec on aws, where no flow runs on the stack: the gap is named
    doc = yaml.safe_load(spec.read_text())
    doc["target"] = {**doc["target"], "kind": "aws", "region": "eu-west-1"}
    aws = tmp_path / "aws" / "mlstack.yaml"
    shutil.copytree(spec.parent, aws.parent)
    aws.write_text(yaml.safe_dump(doc, sort_keys=False))
    p, _ = plan_for_out(aws, tmp_path / "aws-out")
    assert p.gaps[0].startswith("export the monitoring flow's report as metrics")
    assert "its drift, feature freshness, model age alerts" in p.gaps[0]
