"""What the report shows, read in one place: the spec (linted and compiled in memory), its
graph, the plan against build/, the deploy state (<project>/.mlstack/deployments.json), the IR
each version ran (its snapshot's manifest) and the state files of the generated flows
(training.json, monitoring.json under the runtime state folder). Reads only; writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.contract import MONITORING_FILE, MONITORING_HISTORY_FILE, TRAINING_FILE
from mlstack.codegen.graph import SystemGraph, system_graph
from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local.living import Living, observe_living
from mlstack.ops.local.state import DeploymentState, Version
from mlstack.ops.paths import ProjectPaths
from mlstack.workspace.manifest import ManifestError, read_manifest
from mlstack.workspace.plan import Plan, plan


@dataclass(frozen=True)
class VersionRecord:
    """A deployed version and the IR it ran (None when its snapshot is gone or unreadable:
    the report then judges it by the current spec and says so)."""

    version: Version
    system: SystemIR | None


@dataclass(frozen=True)
class SiteData:
    system: SystemIR
    graph: SystemGraph
    plan: Plan
    build_dir: str  # as the report names it: relative to the project folder when inside it
    state: DeploymentState
    versions: tuple[VersionRecord, ...]
    training: dict | None  # the latest training run (training.json), None when absent
    monitoring: dict | None  # the latest monitoring report (monitoring.json)
    warnings: tuple[Diagnostic, ...] = ()  # lint's, of the spec
    living: Living | None = None  # keeper, sidecars, schedules, alerts as observed now
    notes: tuple[str, ...] = field(default=())  # state files that could not be read
    # the monitoring runs' live quality, oldest first (monitoring_history.jsonl)
    quality_history: tuple[dict, ...] = field(default=())

    @property
    def deployed(self) -> bool:
        return bool(self.state.versions)


def _read_json(path: Path, notes: list[str], shown: str) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        notes.append(f"{shown} could not be read ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(data, dict):
        notes.append(f"{shown} is not a JSON object")
        return None
    return data


def _read_lines(path: Path, notes: list[str], shown: str) -> tuple[dict, ...]:
    """The JSON objects of a JSON-lines file, () when it is absent; a line that is not one
    is left out and noted once."""
    try:
        lines = path.read_text().splitlines() if path.is_file() else []
    except OSError as exc:
        notes.append(f"{shown} could not be read: {exc.strerror or exc}")
        return ()
    found, bad = [], 0
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            found.append(value)
        elif line.strip():
            bad += 1
    if bad:
        notes.append(f"{shown}: {bad} lines are not JSON objects (left out)")
    return tuple(found)


def _version_system(paths: ProjectPaths, version: Version) -> SystemIR | None:
    folder = paths.versions_dir / version.version
    if not folder.is_dir():
        return None
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError, ManifestError):
        return None
    return manifest.previous_system() if manifest else None


def _shown(path: Path, project: Path) -> str:
    try:
        return path.resolve().relative_to(project.resolve()).as_posix()
    except ValueError:
        return path.name


def collect(spec: Path | str) -> SiteData:
    """Everything the report shows, for the spec (a file, or a folder holding mlstack.yaml)."""
    from mlstack.workspace.build import compile_tree, spec_paths

    found = spec_paths(spec)
    paths = ProjectPaths.for_spec(found.spec)
    compiled = compile_tree(found.spec, paths.build_dir)
    notes: list[str] = []
    try:
        state = DeploymentState.load(paths.deployments_file)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{paths.deployments_file} cannot be read: {exc}",
                         "it is written by mlstack deploy; restore it or remove .mlstack/") \
            from None
    versions = tuple(VersionRecord(v, _version_system(paths, v)) for v in state.versions)
    runtime = paths.runtime_state_dir
    training = _read_json(runtime / TRAINING_FILE, notes, f".mlstack/runtime/{TRAINING_FILE}")
    monitoring = _read_json(runtime / MONITORING_FILE, notes,
                            f".mlstack/runtime/{MONITORING_FILE}")
    history = _read_lines(runtime / MONITORING_HISTORY_FILE, notes,
                          f".mlstack/runtime/{MONITORING_HISTORY_FILE}")
    living = observe_living(paths) if state.versions else None
    return SiteData(system=compiled.system, graph=system_graph(compiled.system),
                    plan=plan(compiled.system, compiled.tree, paths.build_dir),
                    build_dir=_shown(paths.build_dir, paths.project_dir), state=state,
                    versions=versions, training=training, monitoring=monitoring,
                    warnings=compiled.warnings, notes=tuple(notes), living=living,
                    quality_history=history)
