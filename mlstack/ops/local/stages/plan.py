"""The deploy's plan, computed against what serves (Terraform's prior state): the serving
version's IR (its snapshot's manifest under .mlstack/versions/<v>/) diffed with the new one,
its training data's fingerprint against the source files now, its service files against the
new tree's, each source file's schema against the one recorded with the serving version (a
changed column is "re-validate data", named). The stage list the executor walks comes from
these decisions, and `mlstack plan` shows the same plan for a deployed project
(`deployed_plan`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mlstack.diagnostics.errors import JournalError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local.services import routed, router_alive, supervised
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from mlstack.workspace.manifest import MANIFEST_NAME, build_manifest, read_manifest
from mlstack.workspace.plan import DeployActions, deploy_actions, diff_systems

# the stages that bring a new version up, in order (stages/__init__.py maps them to modules)
NEW_VERSION_STAGES = ("train", "profile", "start_service", "skew_check", "verify", "sidecars",
                      "rollout", "promote")
KEEP_SERVING_STAGES = ("keep_serving",)
# the files of a tree the service does not run (a change of them alone keeps the version)
SERVICE_INDEPENDENT = ("pipelines/", "monitoring/", "infra/", MANIFEST_NAME)
CANDIDATE_EVENT = "candidate-registered"  # a retrain with on_new_model: register
# in a version's snapshot: each file source's columns and their types when it was deployed
SCHEMAS_FILE = "source_schemas.json"


@dataclass(frozen=True)
class SchemaChange:
    """A column of a source file whose type differs from the serving version's record (old
    None: a column the file did not have; new None: one it no longer has)."""

    source: str
    column: str
    old: str | None
    new: str | None

    def describe(self) -> str:
        if self.old is None:
            return f"{self.column} added ({self.new})"
        if self.new is None:
            return f"{self.column} removed (was {self.old})"
        return f"{self.column} {self.old} -> {self.new}"

    def as_dict(self) -> dict:
        return {"source": self.source, "column": self.column, "old": self.old,
                "new": self.new}


@dataclass(frozen=True)
class DeployPlan:
    """What a local deploy (or a scheduled retrain) does, against the serving version."""

    actions: DeployActions
    serving: str | None  # the version planned against (None: nothing deployed serves)
    new_version: bool  # a new version is brought up (else the serving one stays)
    reuse: str | None = None  # the version whose model is served again (no training)
    candidate: str | None = None  # a registered candidate brought up as itself
    stages: tuple[str, ...] = ()
    trigger: str = "deploy"  # what asked for it: deploy, or schedule (a retrain)
    schema_changes: tuple[SchemaChange, ...] = ()  # source columns changed since serving's

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.actions.reasons

    def as_dict(self) -> dict:
        return {"serving": self.serving, "new_version": self.new_version,
                "train": self.actions.train and self.new_version, "verify": self.actions.verify,
                "reuse": self.reuse, "candidate": self.candidate, "stages": list(self.stages),
                "trigger": self.trigger, "reasons": list(self.actions.reasons),
                "schema_changes": [c.as_dict() for c in self.schema_changes]}


def digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def data_key(system: SystemIR, project_dir: Path) -> str:
    """The fingerprint of the source data files: what the spec does not show but the model
    was trained on (a change retrains)."""
    files = {}
    for source in system.sources:
        if source.path:
            path = project_dir / source.path
            files[source.name] = hashlib.sha256(path.read_bytes()).hexdigest() \
                if path.is_file() else None
    return digest(files)


def source_schemas(system: SystemIR, project_dir: Path) -> dict[str, dict[str, str] | None]:
    """Each file source's columns and their types, from its file's schema only (what `lint
    --data` reads: a parquet footer, a CSV header and sample); None for a file missing or
    unreadable (ingest names it)."""
    from mlstack.frontend.checks.data_checks import file_schema

    found: dict[str, dict[str, str] | None] = {}
    for source in sorted(system.sources, key=lambda s: s.name):
        if source.family != "file" or not source.path:
            continue
        try:
            found[source.name] = file_schema(source.kind, project_dir / source.path)
        except Exception:  # noqa: BLE001 - missing, truncated, corrupt: nothing to compare
            found[source.name] = None
    return found


def record_schemas(system: SystemIR, project_dir: Path, snapshot: Path) -> Path:
    """Write the source files' schemas now into a version's snapshot (SCHEMAS_FILE)."""
    path = snapshot / SCHEMAS_FILE
    path.write_text(json.dumps(source_schemas(system, project_dir), indent=2,
                               sort_keys=True) + "\n")
    return path


def recorded_schemas(paths: ProjectPaths, version: Version) -> dict | None:
    """The schemas recorded with a version, None when it has none (deployed by an mlstack
    that did not record them) or they cannot be read."""
    try:
        data = json.loads((paths.versions_dir / version.version / SCHEMAS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def schema_changes(before: dict, now: dict) -> tuple[SchemaChange, ...]:
    """The columns whose type changed, appeared or went, per source in both records whose
    file was readable both times (a source added or removed is a change of the spec, which
    plan shows already)."""
    changes = []
    for source in sorted(set(before) & set(now)):
        old, new = before[source], now[source]
        if not isinstance(old, dict) or not isinstance(new, dict):
            continue
        changes += [SchemaChange(source, column, old.get(column), new.get(column))
                    for column in sorted(set(old) | set(new))
                    if old.get(column) != new.get(column)]
    return tuple(changes)


def _revalidate(changes: tuple[SchemaChange, ...]) -> dict[str, str]:
    """source -> its changed columns, described (deploy_actions' `revalidate`)."""
    by_source: dict[str, list[str]] = {}
    for change in changes:
        by_source.setdefault(change.source, []).append(change.describe())
    return {source: ", ".join(columns) for source, columns in by_source.items()}


def tree_files(folder: Path) -> dict[str, str]:
    """The files of a generated tree and their hashes, as its manifest records them."""
    manifest = folder / MANIFEST_NAME
    return json.loads(manifest.read_text()).get("files", {}) if manifest.exists() else {}


def deployed_system(paths: ProjectPaths, version: Version | None) -> SystemIR | None:
    """The IR the version was compiled from (its snapshot's manifest), None if unreadable."""
    if version is None:
        return None
    snapshot = paths.versions_dir / version.version
    manifest = read_manifest(snapshot) if (snapshot / MANIFEST_NAME).is_file() else None
    return manifest.previous_system() if manifest else None


def candidate(state: DeploymentState, system: SystemIR, key: str) -> Version | None:
    """The newest candidate a scheduled retrain registered (on_new_model: register) for
    this spec and these data, not brought up since."""
    for event in reversed(state.history):
        if event.get("event") != CANDIDATE_EVENT:
            continue
        found = state.get(event.get("version"))
        if (found is not None and found.status == VersionStatus.STOPPED and found.model_tag
                and not found.pid and found.spec_hash == system.spec_hash
                and found.training_key == key and found.version != state.current):
            return found
        return None
    return None


def plan_deploy(system: SystemIR, paths: ProjectPaths, state: DeploymentState, *,
                retrain: bool = False, port: int | None = None,
                files: dict[str, str] | None = None, trigger: str = "deploy") -> DeployPlan:
    """What deploying `system` does against what serves: the same IR diff `mlstack plan`
    prints, plus the source data and the service's files (`files`: the new tree's, by
    default build/'s manifest). `port`: the router's port asked for (None: the recorded)."""
    current = state.get(state.current)
    alive = supervised(paths, current)
    deployed = deployed_system(paths, current)
    key = data_key(system, paths.project_dir)
    changed_schemas: tuple[SchemaChange, ...] = ()
    if current is None or deployed is None or not alive or not current.model_tag:
        actions = deploy_actions((), first=True)
    else:
        recorded = recorded_schemas(paths, current) if current.training_key != key else None
        if recorded is not None:  # the data changed: has any column's type?
            changed_schemas = schema_changes(recorded,
                                             source_schemas(system, paths.project_dir))
        actions = deploy_actions(diff_systems(deployed, system),
                                 data_changed=current.training_key != key,
                                 revalidate=_revalidate(changed_schemas))
        if retrain:
            actions = DeployActions(True, True, True, (*actions.reasons, "--retrain"))
        elif not actions.new_version and _service_files_differ(
                paths, current, tree_files(paths.build_dir) if files is None else files):
            # the service's code changed though no resource did (an mlstack upgrade, say)
            actions = DeployActions(actions.train, True, True,
                                    (*actions.reasons, "the generated service code changed"))
    port = state.router.port if port is None else port
    # alive: current is not None (supervised(paths, None) is False)
    serving = (current is not None and alive and router_alive(paths, state)
               and state.router.port == port and routed(paths).get(current.version) == 100)
    name = current.version if current is not None and alive else None
    if serving and not actions.new_version:
        return DeployPlan(actions, name, False, stages=KEEP_SERVING_STAGES, trigger=trigger)
    found = None if retrain else candidate(state, system, key)
    if found is not None and actions.train:
        actions = DeployActions(False, True, True, (
            *actions.reasons, f"{found.version} was trained on these data by the scheduled "
                              f"retrain: rolled out without training"))
        return DeployPlan(actions, name, True, reuse=found.version, candidate=found.version,
                          stages=NEW_VERSION_STAGES, trigger=trigger,
                          schema_changes=changed_schemas)
    reuse = (current.version if not actions.train and current is not None
             and current.model_tag else None)
    if not serving and not actions.new_version:
        actions = DeployActions(actions.train, True, True, (
            *actions.reasons, "nothing serves on the router's port: a new version"))
    return DeployPlan(actions, name, True, reuse=reuse, stages=NEW_VERSION_STAGES,
                      trigger=trigger, schema_changes=changed_schemas)


def _service_files_differ(paths: ProjectPaths, version: Version, files: dict) -> bool:
    def service(data: dict) -> dict:
        return {k: v for k, v in data.items() if not k.startswith(SERVICE_INDEPENDENT)}

    return service(files) != service(tree_files(paths.versions_dir / version.version))


def deployed_plan(spec: Path | str, system: SystemIR, tree) -> DeployPlan | None:
    """`mlstack plan` for a deployed local project: what `mlstack deploy` would do with the
    compiled `tree` against the version that serves (reads the record and the processes;
    starts and writes nothing). None when the project was never deployed or its record is
    unreadable."""
    paths = ProjectPaths.for_spec(Path(spec))
    if not paths.deployments_file.is_file():
        return None
    try:
        state = DeploymentState.load(paths.deployments_file)
    except (OSError, ValueError, KeyError, TypeError, JournalError):
        return None
    if not state.versions:
        return None
    return plan_deploy(system, paths, state, files=build_manifest(tree, system).files)
