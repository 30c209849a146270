"""`plan`: what compiling would change, as data. Nothing is written; printing is in
mlstack.plan_render.

Two levels, like `terraform plan`:
- files: create / update / delete / unchanged per generated file, with the files the user
  edited (or that mlstack did not write) flagged as conflicts;
- resources, in ML terms: the IR of the last compile (kept in the manifest) diffed against
  the new IR, property by property, each change with what it means for the running system
  (rematerialize features, retrain, a breaking API change, re-evaluate, redeploy the service).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.errors import UsageError
from mlstack.filetree import FileTree
from mlstack.ir.nodes import Derivation, SystemIR
from mlstack.manifest import build_manifest, read_manifest
from mlstack.writer import FileChange, compare_tree, pending_commit

# What a change to each kind of resource means for the running system.
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
    action: str  # create | update | delete
    consequence: str  # one of the constants above
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

    @property
    def file_changes(self) -> list[FileChange]:
        return [f for f in self.files if f.action != "unchanged"]

    @property
    def conflicts(self) -> list[FileChange]:
        return [f for f in self.files if f.conflict]

    @property
    def consequences(self) -> list[str]:
        return sorted({r.consequence for r in self.resources})

    @property
    def has_changes(self) -> bool:
        return bool(self.file_changes or self.resources or self.interrupted_write)

    def as_dict(self) -> dict:
        return {"system": self.system, "out_dir": self.out_dir, "spec_file": self.spec_file,
                "spec_hash": self.spec_hash, "previous_spec_hash": self.previous_spec_hash,
                "baseline": self.baseline,
                "has_changes": self.has_changes, "interrupted_write": self.interrupted_write,
                "consequences": self.consequences,
                "files": [f.as_dict() for f in self.files],
                "resources": [r.as_dict() for r in self.resources],
                "derivations": [d.as_dict() for d in self.derivations]}


# -- the resources of a system, as flat property maps --------------------------------------
def _flat(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts -> {'a.b': leaf}; lists stay whole (their order is meaningful)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key in sorted(value):
            out.update(_flat(value[key], f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def _dump(node, exclude=("at",)) -> dict:
    return node.model_dump(mode="json", exclude=set(exclude))


def _gate(g) -> str | None:
    return None if g is None else f"{g.metric} {g.op} {g.threshold:g}"


def _model(s: SystemIR) -> dict:
    m = s.model
    return {"task": m.task, "framework": m.framework, "algorithm": m.algorithm,
            "estimator": f"{m.estimator.module}.{m.estimator.cls}",
            "params": {k: v for k, v in m.estimator.params},
            "features": [f.ref for f in m.features], "group_by": m.group_by,
            "label": _dump(s.label),
            "training": {"split_by": s.training.split_by,
                         "test_fraction": s.training.test_fraction, "seed": s.training.seed}}


def _service(s: SystemIR) -> dict:
    data = _dump(s.serving)
    r = s.serving.rollout
    data["rollout"]["abort_latency_p99"] = _gate(r.abort_latency_p99)
    data["rollout"]["abort_error_rate"] = _gate(r.abort_error_rate)
    t = s.target
    data["resources"] = _dump(t.serving)
    data["replicas"] = {"min": t.replicas_min, "max": t.replicas_max,
                        "autoscale_target_rps_per_replica": t.autoscale_target_rps_per_replica}
    return data


def _pipelines(s: SystemIR) -> dict:
    t = s.training
    return {"schedule": t.schedule, "retries": t.retries,
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
RESOURCES: tuple[tuple[str, str, Callable[[SystemIR], dict[str, dict]]], ...] = (
    ("source", REVALIDATE, _each(lambda s: s.sources)),
    ("entity", REMATERIALIZE, _each(lambda s: s.entities)),
    ("feature_view", REMATERIALIZE, _each(lambda s: s.feature_views)),
    ("transform", RETRAIN, _each(lambda s: s.transforms, lambda t: {
        "expr": t.expr, "dtype": t.dtype})),
    ("model", RETRAIN, _one(lambda s: s.python_name, _model)),
    ("request_schema", BREAKING_API, _one(lambda s: s.python_name, lambda s: {
        "request_keys": {k.name: k.dtype for k in s.model.request_keys}})),
    ("evaluation", REEVALUATE, _one(lambda s: s.python_name, lambda s: {
        "metrics": list(s.evaluation.metrics),
        "gates": [_gate(g) for g in s.evaluation.gates]})),
    ("service", REDEPLOY_SERVICE, _one(lambda s: s.python_name, _service)),
    ("pipelines", REDEPLOY_PIPELINES, _one(lambda s: s.python_name, _pipelines)),
    ("slos", REVERIFY_SLOS, _one(lambda s: s.python_name, _slos)),
    ("monitoring", UPDATE_MONITORING, _one(lambda s: s.python_name, lambda s: _dump(
        s.monitoring))),
    ("target", REPROVISION, _one(lambda s: s.python_name, lambda s: {
        "kind": s.target.kind, "region": s.target.region, "namespace": s.target.namespace,
        "online_store": s.target.online_store})),
)


def diff_systems(old: SystemIR | None, new: SystemIR) -> tuple[ResourceChange, ...]:
    """Resource-level changes from `old` (None: nothing deployed yet) to `new`."""
    changes: list[ResourceChange] = []
    for kind, consequence, resources in RESOURCES:
        before = {name: _flat(p) for name, p in resources(old).items()} if old else {}
        after = {name: _flat(p) for name, p in resources(new).items()}
        for name in sorted(set(before) | set(after)):
            b, a = before.get(name), after.get(name)
            if b == a:
                continue
            action = "create" if b is None else "delete" if a is None else "update"
            b, a = b or {}, a or {}
            props = tuple(PropertyChange(key, b.get(key), a.get(key))
                          for key in sorted(set(b) | set(a)) if b.get(key) != a.get(key))
            changes.append(ResourceChange(kind, name, action, consequence, props))
    return tuple(changes)


def diff_derivations(old: SystemIR | None, new: SystemIR) -> tuple[DerivationChange, ...]:
    before: dict[str, Derivation] = {d.setting: d for d in old.derivations} if old else {}
    return tuple(
        DerivationChange(d.setting, d.value, d.reason,
                         previous=(before[d.setting].value if d.setting in before
                                   and before[d.setting].value != d.value else None))
        for d in sorted(new.derivations, key=lambda d: d.setting))


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
    return Plan(system=system.name, out_dir=str(out), spec_file=system.spec_file, spec_hash=system.spec_hash,
                previous_spec_hash=old_manifest.spec_hash if old_manifest else None,
                baseline=baseline, files=files, resources=resources,
                derivations=diff_derivations(old_system, system),
                interrupted_write=pending_commit(out))
