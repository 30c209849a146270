"""`plan`: what compiling would change, as data. Nothing is written; printing is in
mlstack.cli.plan_output.

Two levels, like `terraform plan`:
- files: create / update / delete / unchanged per generated file, with the files the user
  edited (or that mlstack did not write) flagged as conflicts;
- resources, in ML terms: the IR of the last compile (kept in the manifest) diffed against
  the new IR, property by property, each change with what it means for the running system
  (rematerialize features, retrain, a breaking API change, re-evaluate, redeploy the service);
- for kubernetes/aws targets, the infrastructure: the Terraform resources of the stack
  (the infra backend's planned_resources) added, changed or destroyed, where "changed" means a value
  of the infra app's config that the resource is built from differs (INFRA_INPUTS), and the
  monthly cost estimate from the versioned price table (mlstack.codegen.backends.infra_costs), before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlstack.codegen.backends.infra_inputs import flat_properties
from mlstack.codegen.filetree import FileTree
from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.ir.nodes import Derivation, SystemIR
from mlstack.workspace.manifest import build_manifest, read_manifest
from mlstack.workspace.writer import FileChange, compare_tree, pending_commit

if TYPE_CHECKING:
    from mlstack.codegen.backends.infra_costs import CostEstimate

class Consequence(StrEnum):
    """What a change to a kind of resource means for the running system."""

    REMATERIALIZE = "rematerialize"
    RETRAIN = "retrain"
    BREAKING_API = "breaking API change"
    REEVALUATE = "re-evaluate"
    REDEPLOY_SERVICE = "redeploy service"
    REDEPLOY_PIPELINES = "redeploy pipelines"
    REVALIDATE = "re-validate data"
    REVERIFY_SLOS = "re-verify SLOs"
    UPDATE_MONITORING = "update monitoring"
    REPROVISION = "re-provision infrastructure"
    DOCUMENTATION = "documentation only"


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


# Properties that describe a resource without changing what runs.
DOCUMENTATION_PROPERTIES = frozenset({"description", "owner", "tags"})


@dataclass(frozen=True)
class PropertyChange:
    name: str  # dotted, e.g. 'batching.max_latency_ms'
    old: object
    new: object

    def as_dict(self) -> dict:
        return {"name": self.name, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class ResourceChange:
    kind: str  # source, entity, feature_view, transform, model, request_schema, ...
    name: str
    action: Action
    consequence: Consequence
    properties: tuple[PropertyChange, ...] = ()

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "action": self.action,
                "consequence": self.consequence,
                "properties": [p.as_dict() for p in self.properties]}


@dataclass(frozen=True)
class DerivationChange:
    """A derived setting of the new IR and, when it differs, its value in the last compile."""

    setting: str
    value: str
    reason: str
    previous: str | None = None  # None when unchanged or not derived before

    def as_dict(self) -> dict:
        return {"setting": self.setting, "value": self.value, "reason": self.reason,
                "previous": self.previous}


@dataclass(frozen=True)
class InfraChange:
    """A Terraform resource of the infra stack that the new spec adds, changes or destroys."""

    type: str  # terraform resource type, e.g. 'aws_eks_node_group'
    name: str
    action: str  # create | update | delete
    properties: tuple[PropertyChange, ...] = ()  # the config inputs that changed (update)

    @property
    def address(self) -> str:
        return f"{self.type}.{self.name}"

    def as_dict(self) -> dict:
        return {"address": self.address, "type": self.type, "name": self.name,
                "action": self.action, "properties": [p.as_dict() for p in self.properties]}


@dataclass(frozen=True)
class InfraPlan:
    stack: str | None  # the stack the target gets (None: local target, no infra)
    changes: tuple[InfraChange, ...] = ()
    unchanged: int = 0

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def as_dict(self) -> dict:
        return {"stack": self.stack, "changes": [c.as_dict() for c in self.changes],
                "add": self.count("create"), "change": self.count("update"),
                "destroy": self.count("delete"), "unchanged": self.unchanged}


def cost_as_dict(cost: CostEstimate | None) -> dict | None:
    if cost is None:
        return None
    return {**asdict(cost), "monthly_min_usd": cost.monthly_min_usd,
            "monthly_max_usd": cost.monthly_max_usd}


class ServingPlan(Protocol):
    """Deploy's plan against the serving version, as this plan reads it (the class,
    mlstack.ops.local.stages.plan.DeployPlan, lives in a layer above this one)."""

    @property
    def actions(self) -> DeployActions: ...

    @property
    def new_version(self) -> bool: ...

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Plan:
    system: str  # the system's name
    out_dir: str
    spec_file: str
    spec_hash: str
    previous_spec_hash: str | None  # None: no earlier compile in out_dir
    baseline: str  # what resources are diffed against: 'none', 'manifest' or 'unreadable'
    files: tuple[FileChange, ...]
    resources: tuple[ResourceChange, ...]
    derivations: tuple[DerivationChange, ...] = field(default=())
    interrupted_write: bool = False  # an earlier write stopped after its commit point
    infra: InfraPlan = field(default=InfraPlan(stack=None))
    cost: CostEstimate | None = None  # monthly estimate of the new spec (cluster targets)
    previous_cost: CostEstimate | None = None  # ... of the last compile's, when it had one
    target: str = "local"  # the target kind of the new spec
    # a deployed local project: deploy's own plan against the version that serves
    # (mlstack.ops.local.stages.plan.DeployPlan: actions, serving, stages, as_dict())
    serving_plan: ServingPlan | None = None
    rollout: str = "roll it out"  # how a new version takes traffic (rollout_phrase)
    # what the local target does that the generated cluster stack does not yet (target_gaps)
    gaps: tuple[str, ...] = ()

    @property
    def deploy(self) -> DeployActions | None:
        """What `mlstack deploy` on a local target does: for a deployed project, deploy's
        own plan against the serving version (its IR, data and service files); else the
        same decision from this diff against the last compile."""
        if self.serving_plan is not None:
            return self.serving_plan.actions
        if self.target != "local" or self.baseline == "unreadable":
            return None
        return deploy_actions(self.resources, first=self.baseline == "none")

    @property
    def deploy_pending(self) -> bool:
        """A deploy against the serving version would do something."""
        return self.serving_plan is not None and (
            self.serving_plan.new_version or not self.serving_plan.actions.nothing)

    @property
    def file_changes(self) -> list[FileChange]:
        return [f for f in self.files if f.action != "unchanged"]

    @property
    def conflicts(self) -> list[FileChange]:
        return [f for f in self.files if f.conflict]

    @property
    def consequences(self) -> list[str]:
        found = {r.consequence for r in self.resources}
        return sorted(found | {Consequence.REPROVISION} if self.infra.changes else found)

    @property
    def has_changes(self) -> bool:
        return bool(self.file_changes or self.resources or self.infra.changes
                    or self.interrupted_write or self.deploy_pending)

    def as_dict(self) -> dict:
        return {"system": self.system, "out_dir": self.out_dir, "spec_file": self.spec_file,
                "spec_hash": self.spec_hash, "previous_spec_hash": self.previous_spec_hash,
                "baseline": self.baseline,
                "has_changes": self.has_changes, "interrupted_write": self.interrupted_write,
                "consequences": self.consequences,
                "files": [f.as_dict() for f in self.files],
                "resources": [r.as_dict() for r in self.resources],
                "derivations": [d.as_dict() for d in self.derivations],
                "infra": self.infra.as_dict(), "cost": cost_as_dict(self.cost),
                "previous_cost": cost_as_dict(self.previous_cost),
                "deploy": self._deploy_dict(), "gaps": list(self.gaps)}

    def _deploy_dict(self) -> dict | None:
        if self.serving_plan is not None:
            return self.serving_plan.as_dict()
        if self.deploy is None:
            return None
        return {"train": self.deploy.train, "new_version": self.deploy.new_version,
                "verify": self.deploy.verify, "reasons": list(self.deploy.reasons),
                "serving": None}


def target_gaps(system: SystemIR) -> tuple[str, ...]:
    """What the spec asks that the generated kubernetes or aws stack does not carry out yet,
    in plain words (the local target does each); () on the local target."""
    if system.target.kind == "local":
        return ()
    m = system.monitoring
    gaps = []
    watched = [what for what, on in (
        ("drift", m.drift_method is not None),
        ("feature freshness", system.slos.feature_freshness_seconds is not None),
        ("model age", m.model_staleness_seconds is not None),
        ("live quality", bool(system.slos.quality) and m.prediction_log.enabled)) if on]
    # the kubernetes stack runs a Pushgateway the monitoring flow pushes its gauges to; the
    # aws stack places no workloads (flows included) and has no Prometheus to scrape one
    if watched and system.target.kind == "aws":
        gaps.append(
            f"export the monitoring flow's report as metrics: its {', '.join(watched)} alerts "
            "(monitoring/prometheus-rules.yaml) have no series to fire on; the SLO burn-rate "
            "alerts on the service's own metrics do (locally, deploy runs the exporter; the "
            "kubernetes target pushes them to its Pushgateway)")
    if m.alerts:
        gaps.append("deploy Alertmanager's configuration: load monitoring/alertmanager.yml "
                    "into the Alertmanager you run (docs/architecture.md, Monitoring and "
                    "alerts)")
    if system.training.schedule is not None:
        gaps.append("roll a scheduled retrain's model out: it is registered and promoted, "
                    "and served from the service's next start (training.on_new_model: "
                    "register)")
    return tuple(gaps)


def rollout_phrase(r: Any) -> str:
    """How deploy moves traffic to a new version, in plan's words (an IR RolloutNode)."""
    if r.strategy == "all_at_once":
        return "switch all traffic to it at once"
    if r.strategy == "shadow" and r.shadow is not None:
        gate = r.shadow.min_agreement
        return (f"shadow it on a mirrored copy of the traffic and promote it at agreement "
                f"{gate.op} {gate.threshold:g} (local target only)")
    if r.strategy == "ab" and r.ab is not None:
        return (f"start an A/B experiment with {r.ab.split}% of {r.ab.key} on it, promoted or "
                f"aborted by the keeper on the {r.ab.metric} readout (local target only)")
    steps = "roll it out in canary steps " + " -> ".join(f"{w}%" for w in r.steps)
    guard = r.feedback
    if guard is not None:
        return (f"{steps}, held at {guard.weight}% until the keeper's test of the "
                f"{guard.metric} feedback decides (local target only)")
    return steps


# -- the resources of a system, as flat property maps --------------------------------------
def _dump(node, exclude=("at",)) -> dict:
    return node.model_dump(mode="json", exclude=set(exclude))


def _gate(g) -> str | None:
    return None if g is None else f"{g.metric} {g.op} {g.threshold:g}"


def _model(s: SystemIR) -> dict:
    m = s.model
    return {"task": m.task, "framework": m.framework, "algorithm": m.algorithm,
            "estimator": m.estimator.display,
            "params": {k: v for k, v in m.estimator.params},
            "features": [f.ref for f in m.features], "group_by": m.group_by,
            # registration exports the model to ONNX (or not): a change re-registers it
            "serving_runtime": s.serving.runtime,
            "label": _dump(s.label),
            "training": {"split_by": s.training.split_by,
                         "test_fraction": s.training.test_fraction, "seed": s.training.seed}}


def _service(s: SystemIR) -> dict:
    # runtime: the model's (above); router: the router's limits, derived from the service's
    # own settings below (shown by plan --explain), applied by the next rollout
    data = _dump(s.serving, exclude=("at", "runtime", "router"))
    r = s.serving.rollout
    data["rollout"]["abort_latency_p99"] = _gate(r.abort_latency_p99)
    data["rollout"]["abort_error_rate"] = _gate(r.abort_error_rate)
    if r.shadow is not None:
        data["rollout"]["shadow"]["min_agreement"] = _gate(r.shadow.min_agreement)
    t = s.target
    data["resources"] = _dump(t.serving)
    data["replicas"] = {"min": t.replicas_min, "max": t.replicas_max,
                        "autoscale_target_rps_per_replica": t.autoscale_target_rps_per_replica}
    return data


def _pipelines(s: SystemIR) -> dict:
    t = s.training
    # the orchestrator runs the same tasks on the same data: another one redeploys them,
    # it retrains nothing
    return {"orchestrator": s.target.orchestrator, "schedule": t.schedule, "on_new_model": t.on_new_model, "retries": t.retries,
            "retry_delay_seconds": t.retry_delay_seconds, "timeout_seconds": t.timeout_seconds,
            "materialize_interval_seconds": t.materialize_interval_seconds,
            "training_resources": _dump(s.target.training)}


def _slos(s: SystemIR) -> dict:
    data = _dump(s.slos)
    data["quality"] = [_gate(g) for g in s.slos.quality]
    return data


def _one(name_of: Callable[[SystemIR], str], props: Callable[[SystemIR], dict]):
    return lambda s: {name_of(s): props(s)}


def _each(items: Callable[[SystemIR], tuple], props=_dump):
    return lambda s: {item.name: props(item) for item in items(s)}


# (kind, consequence, system -> {resource name: properties}). A system has one of each
# singleton resource, named after the system.
RESOURCES: tuple[tuple[str, Consequence, Callable[[SystemIR], dict[str, dict]]], ...] = (
    ("system", Consequence.DOCUMENTATION, _one(lambda s: s.python_name, lambda s: {
        "owner": s.owner, "description": s.description, "tags": dict(s.tags)})),
    ("source", Consequence.REVALIDATE, _each(lambda s: s.sources)),
    ("entity", Consequence.REMATERIALIZE, _each(lambda s: s.entities)),
    ("feature_view", Consequence.REMATERIALIZE, _each(lambda s: s.feature_views)),
    ("transform", Consequence.RETRAIN, _each(lambda s: s.transforms, lambda t: {
        "expr": t.expr, "dtype": t.dtype, "description": t.description,
        "python": t.function.ref if t.function else None,
        "inputs": [i.ref for i in t.inputs] if t.function else None})),
    # the project's Python files the spec names (estimator factory, python transforms): both
    # run in training, so a change of a file's bytes retrains
    ("user_code", Consequence.RETRAIN, lambda s: {f.path: {"sha256": f.sha256}
                                                  for f in s.user_files}),
    ("model", Consequence.RETRAIN, _one(lambda s: s.python_name, _model)),
    ("request_source", Consequence.RETRAIN, _each(lambda s: s.request_sources)),
    ("request_schema", Consequence.BREAKING_API, _one(lambda s: s.python_name, lambda s: {
        "request_keys": {k.name: k.dtype for k in s.model.request_keys},
        "request_fields": {f.name: f.dtype for f in s.model.request_fields}})),
    ("evaluation", Consequence.REEVALUATE, _one(lambda s: s.python_name, lambda s: {
        "metrics": list(s.evaluation.metrics),
        "gates": [_gate(g) for g in s.evaluation.gates]})),
    ("service", Consequence.REDEPLOY_SERVICE, _one(lambda s: s.python_name, _service)),
    ("pipelines", Consequence.REDEPLOY_PIPELINES, _one(lambda s: s.python_name, _pipelines)),
    # target.compute: the Ray cluster the offline steps run on (a change resizes or replaces
    # it; the model it trains equals the single-process one, so nothing retrains)
    ("compute", Consequence.REDEPLOY_PIPELINES, lambda s: {s.python_name: _dump(
        s.target.compute, exclude=("at", "steps"))} if s.target.compute else {}),
    ("slos", Consequence.REVERIFY_SLOS, _one(lambda s: s.python_name, _slos)),
    ("monitoring", Consequence.UPDATE_MONITORING, _one(lambda s: s.python_name, lambda s: _dump(
        s.monitoring))),
    ("target", Consequence.REPROVISION, _one(lambda s: s.python_name, lambda s: {
        "kind": s.target.kind, "region": s.target.region, "namespace": s.target.namespace,
        "online_store": s.target.online_store})),
)


def diff_systems(old: SystemIR | None, new: SystemIR) -> tuple[ResourceChange, ...]:
    """Resource-level changes from `old` (None: nothing deployed yet) to `new`."""
    changes: list[ResourceChange] = []
    for kind, consequence, resources in RESOURCES:
        before = {name: flat_properties(p) for name, p in resources(old).items()} if old else {}
        after = {name: flat_properties(p) for name, p in resources(new).items()}
        for name in sorted(set(before) | set(after)):
            b, a = before.get(name), after.get(name)
            if b == a:
                continue
            action = (Action.CREATE if b is None else Action.DELETE if a is None
                      else Action.UPDATE)
            b, a = b or {}, a or {}
            props = tuple(PropertyChange(key, b.get(key), a.get(key))
                          for key in sorted(set(b) | set(a)) if b.get(key) != a.get(key))
            effect = consequence
            if action is Action.UPDATE and all(
                    p.name.rpartition(".")[2] in DOCUMENTATION_PROPERTIES for p in props):
                effect = Consequence.DOCUMENTATION
            changes.append(ResourceChange(kind, name, action, effect, props))
    return tuple(changes)


# -- what deploy does about a plan (Terraform's rule: the apply executes the plan) -------------
# The consequences that need the training flow to run again: it validates the data, applies
# and materializes the features, trains, and evaluates against the gates (a gate cannot be
# re-evaluated without the flow's held-out split, so a gate change runs the flow too).
NEEDS_TRAINING = frozenset({Consequence.REVALIDATE, Consequence.REMATERIALIZE,
                            Consequence.RETRAIN, Consequence.REEVALUATE})
# The consequences that need a new service version (a new process with the new code).
NEEDS_SERVICE = NEEDS_TRAINING | {Consequence.BREAKING_API, Consequence.REDEPLOY_SERVICE}


@dataclass(frozen=True)
class DeployActions:
    """What a local deploy does for a set of changes: the same diff `plan` prints."""

    train: bool  # run the training flow (else the serving model is reused)
    new_version: bool  # start a new service version and roll it out (else keep serving)
    verify: bool  # measure the SLOs (of the new version, or of the serving one)
    reasons: tuple[str, ...] = ()  # why, one line per consequence, in plan's words

    @property
    def nothing(self) -> bool:
        return not (self.train or self.new_version or self.verify)


def deploy_actions(changes: tuple[ResourceChange, ...], *, data_changed: bool = False,
                   first: bool = False,
                   revalidate: Mapping[str, str] | None = None) -> DeployActions:
    """Deploy's decisions from plan's resource changes (and whether the source data changed,
    which the spec does not show; `revalidate`: source -> its file's columns whose type
    changed since the serving version, described). `first`: nothing is deployed yet."""
    if first:
        return DeployActions(True, True, True, ("nothing is deployed yet",))
    effects = {c.consequence for c in changes}
    reasons = tuple(f"{c.kind} {c.name}: {c.consequence}" for c in changes)
    if revalidate:
        effects.add(Consequence.REVALIDATE)
        reasons += tuple(f"source {name}: {Consequence.REVALIDATE}, its file's columns "
                         f"changed: {columns}" for name, columns in sorted(revalidate.items()))
    if data_changed:
        effects.add(Consequence.RETRAIN)
        reasons += ("source data changed: retrain",)
    train = bool(effects & NEEDS_TRAINING)
    new_version = bool(effects & NEEDS_SERVICE)
    verify = new_version or Consequence.REVERIFY_SLOS in effects
    return DeployActions(train, new_version, verify, reasons)


def diff_derivations(old: SystemIR | None, new: SystemIR) -> tuple[DerivationChange, ...]:
    before: dict[str, Derivation] = {d.setting: d for d in old.derivations} if old else {}
    return tuple(
        DerivationChange(d.setting, d.value, d.reason,
                         previous=(before[d.setting].value if d.setting in before
                                   and before[d.setting].value != d.value else None))
        for d in sorted(new.derivations, key=lambda d: d.setting))


def _infra_backend():
    from mlstack.codegen.backends import load_backend

    return load_backend("infra")


def diff_infra(old: SystemIR | None, new: SystemIR) -> InfraPlan:
    """The new system's stack against the old one's (None: nothing deployed yet), from the
    resources the infra backend says each system's stack holds."""
    infra = _infra_backend()
    before = infra.planned_resources(old) if old is not None else {}
    after = infra.planned_resources(new)
    changes, unchanged = [], 0
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b == a:
            unchanged += 1
            continue
        action = "create" if b is None else "delete" if a is None else "update"
        b, a = b or {}, a or {}
        props = () if action != "update" else tuple(
            PropertyChange(k, b.get(k), a.get(k)) for k in sorted(set(b) | set(a))
            if b.get(k) != a.get(k))
        changes.append(InfraChange(key[0], key[1], action, props))
    stack = infra.stack_name(new) if after else infra.stack_name(old) if before else None
    return InfraPlan(stack=stack, changes=tuple(changes), unchanged=unchanged)


def _cost(system: SystemIR | None) -> CostEstimate | None:
    if system is None:
        return None
    infra = _infra_backend()
    return infra.monthly_cost(system) if infra.applies(system) else None


def plan(system: SystemIR, tree: FileTree, out_dir: Path | str) -> Plan:
    """What writing `tree` (compiled from `system`) into `out_dir` would change. Pure: reads
    the output folder and its manifest, writes nothing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is a file")
    old_manifest = read_manifest(out) if out.is_dir() else None
    old_system = old_manifest.previous_system() if old_manifest else None
    files = compare_tree(tree, out, build_manifest(tree, system), old_manifest)
    baseline = ("none" if old_manifest is None else
                "manifest" if old_system is not None else "unreadable")
    # an IR the current mlstack cannot read: say so rather than claim everything is new
    resources = () if baseline == "unreadable" else diff_systems(old_system, system)
    infra = (InfraPlan(stack=None) if baseline == "unreadable"
             else diff_infra(old_system, system))
    return Plan(system=system.name, out_dir=str(out), spec_file=system.spec_file, spec_hash=system.spec_hash,
                previous_spec_hash=old_manifest.spec_hash if old_manifest else None,
                baseline=baseline, files=files, resources=resources,
                derivations=diff_derivations(old_system, system),
                interrupted_write=pending_commit(out), infra=infra, cost=_cost(system),
                previous_cost=_cost(old_system), target=system.target.kind,
                rollout=rollout_phrase(system.serving.rollout), gaps=target_gaps(system))
