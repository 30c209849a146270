"""Blueprint READMEs cannot drift: their commands run and their claims are checked.

- Every fenced `sh` block's command runs in a fresh project made from the blueprint (as a user
  gets it from `mlstack init`): lint, plan, compile, graph, docs and schema for real, exit 0;
  deploy and the lifecycle verbs only through the CLI's parser (nothing is deployed here).
- Every claim a README makes about its spec, its generated stack or its data is checked
  against the spec's IR, the compiled tree and plan, lint, or the data files (CLAIMS below).
  Every number in a README's prose must belong to a checked claim (or to a measured one,
  listed in MEASURED with where it comes from): a new number is a new claim to check.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

from mlstack.cli.main import build_parser, main
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.workspace.blueprints import init_project
from tests.conftest import BLUEPRINTS

READMES = {p.parent.name: p for p in sorted(BLUEPRINTS.glob("*/README.md"))}
NAMES = sorted(READMES)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.M | re.S)
RUN = {"lint", "plan", "compile", "graph", "docs", "schema"}  # run for real
PARSE_ONLY = {"deploy", "status", "down", "rollback", "logs"}  # they start or stop things
# Figures that come from training a model, not from the spec or the data: kept in the README
# as measured (with the metric the spec gates on); each entry must still be in its README.
MEASURED = {
    ("fraud-gpu", "reaches about 0.95"): "AUC of the training flow's run (XGBoost on the CPU, "
                                          "gpu: preferred's fallback; its gate: 0.85)",
    ("churn-mlp", "reaches about 0.89"): "AUC of the training flow's run (PyTorch MLP on the "
                                         "CPU; its gate: 0.80)",
    ("search-ranking", "reaches about 0.88"): "NDCG@10 of a local deploy's training run "
                                               "(LGBMRanker)",
    ("search-ranking", "BM25 alone: about 0.70"): "NDCG@10 of ranking by bm25_score alone",
}


def commands(text: str) -> list[list[str]]:
    """The command lines of the fenced sh blocks (comments dropped, continuations joined)."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang not in ("sh", "bash", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                found.append(argv)
    return found


def prose(text: str) -> str:
    return FENCE.sub("", text)


@dataclass
class Blueprint:
    name: str
    folder: Path

    @cached_property
    def system(self) -> SystemIR:
        analysis = analyze_spec(self.folder / "mlstack.yaml")
        assert analysis.system is not None, analysis.errors
        return analysis.system

    @cached_property
    def codes(self) -> set[str]:
        return {d.code for d in analyze_spec(self.folder / "mlstack.yaml").diagnostics}

    @cached_property
    def compiled(self):
        from mlstack.workspace.build import compile_tree

        return compile_tree(self.folder / "mlstack.yaml", self.folder / "build-claims")

    @cached_property
    def plan(self):
        from mlstack.workspace.plan import plan

        return plan(self.compiled.system, self.compiled.tree, self.folder / "build-claims")

    def data(self, relative: str):
        pd = pytest.importorskip("pandas")
        return pd.read_parquet(self.folder / relative)


# --- claims --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    pattern: str
    check: Callable  # (Blueprint, re.Match) -> truthy when the claim holds (or it raises)
    data: bool = False  # reads the data files (pandas: the runtime extra)
    required_in: tuple[str, ...] = ()  # READMEs that must make this claim (as worded)


def _gate(bp, m):
    gates = {(g.metric, g.op, g.threshold) for g in bp.system.evaluation.gates}
    assert (m[1].lower(), m[2], float(m[3])) in gates
    return True


def _metric(bp, m):
    names = {g.metric for g in bp.system.evaluation.gates} | set(bp.system.evaluation.metrics)
    assert f"ndcg@{m[1]}" in names
    return True


def _infra(*addresses):
    def check(bp, m):
        assert set(addresses) <= {c.address for c in bp.plan.infra.changes}
        return True
    return check


def _types(*types):
    def check(bp, m):
        assert set(types) <= {c.type for c in bp.plan.infra.changes}
        return True
    return check


def _count(n: str) -> int:
    return int(n.replace(",", ""))


def _days(series) -> int:
    """Days the sample spans, whole days rounded up (init moves it by an offset that is not
    whole days, so counting calendar dates would count one more)."""
    import math

    return math.ceil((series.max() - series.min()).total_seconds() / 86400)


def _delays(bp, labels, features, keys):
    """For each label row: its time minus the newest feature row at or before it (same keys)."""
    import pandas as pd

    left = bp.data(labels).sort_values("event_timestamp")
    right = bp.data(features)[[*keys, "event_timestamp"]].rename(
        columns={"event_timestamp": "_feature_at"}).sort_values("_feature_at")
    left["event_timestamp"] = left["event_timestamp"].astype("datetime64[ns, UTC]")
    right["_feature_at"] = right["_feature_at"].astype("datetime64[ns, UTC]")
    joined = pd.merge_asof(left, right, left_on="event_timestamp", right_on="_feature_at",
                           by=keys, direction="backward")
    assert joined["_feature_at"].notna().all()
    return joined["event_timestamp"] - joined["_feature_at"]


def _within(delays, low, high, unit):
    import pandas as pd

    lo, hi = pd.Timedelta(**{unit: int(low)}), pd.Timedelta(**{unit: int(high)})
    assert delays.min() >= lo and delays.max() <= hi, (delays.min(), delays.max())
    return True


def _transactions(bp, m):
    frame = bp.data("data/transactions.parquet")
    assert _days(frame["event_timestamp"]) == int(m[1])
    assert abs(len(frame) - _count(m[2])) <= 0.02 * _count(m[2])  # "about"
    assert round(100 * frame["is_fraud"].mean(), 1) == float(m[3])
    return True


def _queries(bp, m):
    frame = bp.data("data/query_documents.parquet")
    assert frame["query_id"].nunique() == int(m[1])
    assert set(frame.groupby("query_id").size()) == {int(m[2])}
    assert _days(frame["event_timestamp"]) == int(m[3])
    return True


def _customers(bp, m):
    frame = bp.data("data/customers.parquet")
    assert frame["customer_id"].nunique() == _count(m[1])
    assert frame["event_timestamp"].dt.strftime("%Y-%m").nunique() == int(m[2])
    return True


def _source_columns(bp, suffixes):
    return {c.name for s in bp.system.sources for c in s.columns
            if any(c.name.endswith(x) for x in suffixes)}


CLAIMS = (
    # the spec
    Claim(r"\(seed (\d+)\)", lambda bp, m: re.search(
        rf"^SEED = {m[1]}$", (bp.folder / "make_data.py").read_text(), re.M)),
    Claim(r"\((\d[\d,]*) req/s\)", lambda bp, m: bp.system.slos.throughput_rps == _count(m[1])
          or pytest.fail(f"throughput SLO {bp.system.slos.throughput_rps}")),
    Claim(r"\bp(50|95|99) (\d+) ms", lambda bp, m: getattr(bp.system.slos, f"p{m[1]}_ms")
          == int(m[2]) or pytest.fail(m[0])),
    Claim(r"gate is on (\w+) \((>=|<=|>|<) ([\d.]+)\)", _gate),
    Claim(r"NDCG@(\d+)", _metric),
    Claim(r"\b(canary|all_at_once) rollout", lambda bp, m: bp.system.serving.rollout.strategy
          == m[1] or pytest.fail(m[0])),
    Claim(r"Runs on the local target", lambda bp, m: bp.system.target.kind == "local"
          or pytest.fail(m[0])),
    Claim(r"Runs on a Kubernetes cluster|`target\.kind: kubernetes`",
          lambda bp, m: bp.system.target.kind == "kubernetes" or pytest.fail(m[0])),
    Claim(r"AWS target|The target is `aws`", lambda bp, m: bp.system.target.kind == "aws"
          or pytest.fail(m[0])),
    Claim(r"(Redis|DynamoDB|SQLite) online store", lambda bp, m: bp.system.target.online_store
          == m[1].lower() or pytest.fail(m[0])),
    Claim(r"GPU training on spot|GPU spot node group for training",
          lambda bp, m: (bp.system.target.training.gpu >= 1 and bp.system.target.training.spot)
          or pytest.fail(m[0])),
    Claim(r"autoscaled serving", lambda bp, m: bp.system.target.replicas_max
          > bp.system.target.replicas_min or pytest.fail(m[0])),
    Claim(r"`group_by: (\w+)`", lambda bp, m: bp.system.model.group_by == m[1]
          or pytest.fail(m[0])),
    Claim(r"latest fifth", lambda bp, m: (bp.system.training.split_by == "time"
                                          and bp.system.training.test_fraction == 0.2)
          or pytest.fail(m[0])),
    Claim(r"^Binary classification", lambda bp, m: bp.system.model.task
          == "binary_classification" or pytest.fail(m[0])),
    Claim(r"^Ranking:", lambda bp, m: bp.system.model.task == "ranking" or pytest.fail(m[0])),
    Claim(r"gradient-boosted regressor on the relevance grade",
          lambda bp, m: "gradient_boosting" in bp.system.model.algorithm
          and bp.system.label.field == "relevance" or pytest.fail(m[0])),
    Claim(r"(XGBoost|LightGBM|PyTorch)'s [\w\s-]+ \(`(\w+)`,\s+the\s+`(\w+)`\s+extra",
          lambda bp, m: (bp.system.model.framework == m[3]
                         and m[1].lower() in (m[3], "pytorch")
                         and bp.system.model.estimator.cls == m[2]) or pytest.fail(m[0]),
          required_in=("churn-mlp", "fraud-gpu", "search-ranking")),
    Claim(r"two hidden layers \((\d+) and (\d+) units\)", lambda bp, m: dict(
        bp.system.model.estimator.params)["hidden_layers"] == (int(m[1]), int(m[2]))
          or pytest.fail(m[0]), required_in=("churn-mlp",)),
    Claim(r"lambdarank", lambda bp, m: bp.system.model.algorithm == "lambdarank"
          or pytest.fail(m[0])),
    Claim(r"`gpu: preferred`", lambda bp, m: bp.system.target.training.gpu_preferred
          or pytest.fail(m[0])),
    Claim(r"activity in the last hour, day and (\d+) days",
          lambda bp, m: {"_1h", "_24h", f"_{m[1]}d"} <= {
              "_" + c.rsplit("_", 1)[1] for c in _source_columns(bp, ("_1h", "_24h",
                                                                      f"_{m[1]}d"))}
          or pytest.fail(m[0])),
    Claim(r"last (\d+) days", lambda bp, m: _source_columns(bp, (f"_{m[1]}d",))
          or pytest.fail(m[0])),
    Claim(r"`(data/[\w.-]+)`", lambda bp, m: (bp.folder / m[1]).is_file() and m[1] in {
        s.path for s in bp.system.sources} or pytest.fail(m[0])),
    Claim(r"`make_data\.py`", lambda bp, m: (bp.folder / "make_data.py").is_file()),
    Claim(r"\bMLS(\d{3})\b", lambda bp, m: f"MLS{m[1]}" in bp.codes
          or pytest.fail(f"lint does not report {m[0]}")),
    # the generated stack and plan
    Claim(r"`mlstack compile` also writes `(\w+)/`",
          lambda bp, m: any(p.startswith(m[1] + "/") for p in bp.compiled.tree.paths())
          or pytest.fail(m[0])),
    Claim(r"synthesizes Terraform\s+JSON for the namespace, the serving Deployment, Service "
          r"and HorizontalPodAutoscaler, Redis,\s+a Prefect worker for a Kubernetes work pool, "
          r"the training job template and the SLO alert\s+rules \(a PrometheusRule",
          _infra("kubernetes_namespace_v1.namespace", "kubernetes_deployment_v1.serving",
                 "kubernetes_service_v1.serving", "kubernetes_horizontal_pod_autoscaler_v2.serving",
                 "kubernetes_deployment_v1.redis", "kubernetes_deployment_v1.prefect_worker",
                 "kubernetes_config_map_v1.training_job_template",
                 "kubernetes_manifest.prometheus_rules"), required_in=("churn-k8s",)),
    Claim(r"app for an\s+EKS cluster with a GPU spot node group for training, DynamoDB, S3 "
          r"and ECR", _types("aws_eks_cluster", "aws_eks_node_group", "aws_dynamodb_table",
                             "aws_s3_bucket", "aws_ecr_repository"), required_in=("fraud-gpu",)),
    Claim(r"`mlstack plan`\s+lists its Terraform resources and a monthly cost estimate",
          lambda bp, m: (bp.plan.infra.changes and bp.plan.cost is not None)
          or pytest.fail(m[0]), required_in=("fraud-gpu",)),
    # the data
    Claim(r"\((\d[\d,]*) customers x\s+(\d+) months\)", _customers, data=True),
    Claim(r"observed outcome per customer, (\d+)-(\d+) days after a snapshot",
          lambda bp, m: _within(_delays(bp, "data/churn_labels.parquet",
                                        "data/customers.parquet", ["customer_id"]),
                                m[1], m[2], "days"), data=True, required_in=("churn",)),
    Claim(r"(\d+) days of card transactions \(about ([\d,]+), ([\d.]+)% fraudulent\)",
          _transactions, data=True, required_in=("fraud-gpu",)),
    Claim(r"for (\d+) merchants", lambda bp, m: bp.data("data/merchants.parquet")[
        "merchant_id"].nunique() == int(m[1]) or pytest.fail(m[0]), data=True),
    Claim(r"\((\d+) queries x (\d+) candidates, (\d+) days\)", _queries, data=True),
    Claim(r"for (\d+) documents", lambda bp, m: bp.data("data/documents.parquet")[
        "doc_id"].nunique() == int(m[1]) or pytest.fail(m[0]), data=True),
    Claim(r"graded relevance (\d+)-(\d+)", lambda bp, m: set(bp.data(
        "data/relevance_labels.parquet")["relevance"]) == set(range(int(m[1]), int(m[2]) + 1))
          or pytest.fail(m[0]), data=True),
    Claim(r"observed (\d+)-(\d+) minutes after its query",
          lambda bp, m: _within(_delays(bp, "data/relevance_labels.parquet",
                                        "data/query_documents.parquet", ["query_id", "doc_id"]),
                                m[1], m[2], "minutes"), data=True, required_in=("search-ranking",)),
)
NUMBER = re.compile(r"(?<![\w@.])\d+(?:[,.]\d+)*")


def _matches(text: str, claims=CLAIMS):
    for claim in claims:
        for m in re.finditer(claim.pattern, text, re.M):
            yield claim, m


@pytest.fixture
def blueprint(request, tmp_path) -> Blueprint:
    name = request.param
    init_project(tmp_path / name, name)
    return Blueprint(name, tmp_path / name)


# --- the tests -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_commands_are_in_fenced_sh_blocks(name):
    text = READMES[name].read_text()
    assert commands(text), f"{name}: no fenced sh block with commands"
    assert not re.search(r"(?:^|\n)\n {4,}\S", prose(text)), (
        f"{name}: an indented code block: fence it as ```sh so its commands are tested")
    assert all(argv[0] == "mlstack" for argv in commands(text))


@pytest.mark.parametrize("blueprint", NAMES, indirect=True)
def test_readme_commands_run(blueprint, monkeypatch, capsys):
    monkeypatch.chdir(blueprint.folder)
    parser = build_parser()
    for argv in commands((blueprint.folder / "README.md").read_text()):
        verb = argv[1]
        assert verb in RUN | PARSE_ONLY, f"{shlex.join(argv)}: add the verb to RUN or PARSE_ONLY"
        if verb in RUN and "--serve" not in argv:
            assert main(argv[1:]) == 0, shlex.join(argv)
        else:
            args = parser.parse_args(argv[1:])  # raises on a usage error
            assert args.verb == verb
            if getattr(args, "spec", None):
                assert Path(args.spec).is_file(), shlex.join(argv)
    capsys.readouterr()


@pytest.mark.parametrize("name", NAMES)
def test_every_number_in_a_readme_is_a_checked_claim(name):
    text = prose(READMES[name].read_text())
    covered = [m.span() for _, m in _matches(text)]
    for (bp, claim), _why in MEASURED.items():
        if bp == name:
            start = text.replace("\n", " ").find(claim)
            assert start >= 0, f"stale MEASURED entry: {claim!r} is not in {name}'s README"
            covered.append((start, start + len(claim)))
    loose = [m[0] for m in NUMBER.finditer(text)
             if not any(a <= m.start() < b for a, b in covered)]
    assert loose == [], f"{name}: numbers no claim checks: {loose} (add a Claim)"


@pytest.mark.parametrize("name", NAMES)
def test_worded_claims_are_still_made(name):
    text = prose(READMES[name].read_text())
    missing = [c.pattern for c in CLAIMS if name in c.required_in
               and not re.search(c.pattern, text, re.M)]
    assert missing == [], "reworded? update the claim's pattern"


@pytest.mark.parametrize("blueprint", NAMES, indirect=True)
def test_spec_and_stack_claims_hold(blueprint):
    text = prose((blueprint.folder / "README.md").read_text())
    checked = 0
    for claim, m in _matches(text, [c for c in CLAIMS if not c.data]):
        assert claim.check(blueprint, m), m[0]
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("blueprint", NAMES, indirect=True)
def test_data_claims_hold(blueprint):
    pytest.importorskip("pandas")
    text = prose((blueprint.folder / "README.md").read_text())
    for claim, m in _matches(text, [c for c in CLAIMS if c.data]):
        assert claim.check(blueprint, m), m[0]
