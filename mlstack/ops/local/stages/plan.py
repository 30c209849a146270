"""The deploy's plan, computed against what serves (Terraform's prior state): the serving
version's IR (its snapshot's manifest under .mlstack/versions/<v>/) diffed with the new one,
its training data's fingerprint against the source files now, its service files against the
new tree's. The stage list the executor walks comes from these decisions, and `mlstack plan`
shows the same plan for a deployed project (`deployed_plan`)."""

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

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.actions.reasons

    def as_dict(self) -> dict:
        return {"serving": self.serving, "new_version": self.new_version,
                "train": self.actions.train and self.new_version, "verify": self.actions.verify,
                "reuse": self.reuse, "candidate": self.candidate, "stages": list(self.stages),
                "trigger": self.trigger, "reasons": list(self.actions.reasons)}


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
    if deployed is None or not alive or not current.model_tag:
        actions = deploy_actions((), first=True)
    else:
        actions = deploy_actions(diff_systems(deployed, system),
                                 data_changed=current.training_key != key)
        if retrain:
            actions = DeployActions(True, True, True, (*actions.reasons, "--retrain"))
        elif not actions.new_version and _service_files_differ(
                paths, current, tree_files(paths.build_dir) if files is None else files):
            # the service's code changed though no resource did (an mlstack upgrade, say)
            actions = DeployActions(actions.train, True, True,
                                    (*actions.reasons, "the generated service code changed"))
    port = state.router.port if port is None else port
    serving = (alive and router_alive(paths, state) and state.router.port == port
               and routed(paths).get(current.version) == 100)
    name = current.version if alive else None
    if serving and not actions.new_version:
        return DeployPlan(actions, name, False, stages=KEEP_SERVING_STAGES, trigger=trigger)
    found = None if retrain else candidate(state, system, key)
    if found is not None and actions.train:
        actions = DeployActions(False, True, True, (
            *actions.reasons, f"{found.version} was trained on these data by the scheduled "
                              f"retrain: rolled out without training"))
        return DeployPlan(actions, name, True, reuse=found.version, candidate=found.version,
                          stages=NEW_VERSION_STAGES, trigger=trigger)
    reuse = (current.version if not actions.train and current is not None
             and current.model_tag else None)
    if not serving and not actions.new_version:
        actions = DeployActions(actions.train, True, True, (
            *actions.reasons, "nothing serves on the router's port: a new version"))
    return DeployPlan(actions, name, True, reuse=reuse, stages=NEW_VERSION_STAGES,
                      trigger=trigger)


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
