"""`mlstack repair`: the deploy journal rebuilt from what runs and what is on disk.

A journal that cannot be read (cut short, overwritten, the wrong shape, a folder), or that is
missing while the project runs, is moved aside as deployments.json.broken-<n> and rebuilt:

- from its previous good copy (deployments.json.prev, one save older) when there is one: the
  versions' models, metrics, example requests, SLO reports and the history;
- then from what is observed, which wins: every version whose build is kept under
  .mlstack/versions/; every process carrying the project's owner marker, by role (a version's
  supervisor with its port and the model it serves, read from its environment; the router and
  its port; the Ray cluster's supervisor and its shape); the router's table (the weights, so
  the version taking most traffic is the current one); the model store's promotions
  (.mlstack/runtime/models.json) for the metrics of a model a version serves.

Nothing is started or stopped: the next deploy, rollback or down reconciles what runs with
the rebuilt record, as after any interrupted deploy.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.contract import ENV_MODEL_TAG, MODELS_FILE
from mlstack.diagnostics.errors import JournalError
from mlstack.ops.local import procs, ray_cluster
from mlstack.ops.local.services import (
    role_of,
    routed,
    router_config,
    router_owner,
    supervisor_report,
    version_owner,
)
from mlstack.ops.local.state import (
    VERSION_NAME,
    ClusterInfo,
    DeploymentState,
    RouterInfo,
    Version,
    VersionStatus,
    parse_journal,
    previous_copy,
)
from mlstack.ops.paths import ProjectPaths, project_lock

RUNNING = (VersionStatus.STARTING, VersionStatus.READY, VersionStatus.SERVING)


@dataclass
class RepairResult:
    journal: str  # the file
    repaired: bool  # False: it was sound (or nothing was ever deployed); nothing changed
    problem: str = ""  # what was wrong with it
    broken_copy: str | None = None  # where the unusable file was kept
    base: str = ""  # what the record was rebuilt on: the previous good copy, or nothing
    current: str | None = None
    router_port: int | None = None
    versions: list[dict] = field(default_factory=list)  # version, status, pid, port, model
    # promoted models in the model store (None: a promotion that names no model)
    models: list[str | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def repair(spec: Path | str) -> RepairResult:
    """Rebuild an unusable (or missing while the project runs) deploy journal from its
    previous good copy and what is observed; the broken file is kept beside it. A sound
    journal is left alone."""
    from mlstack.workspace.build import spec_paths

    paths = ProjectPaths.for_spec(spec_paths(spec).spec)
    path = paths.deployments_file
    with project_lock(paths):
        try:
            DeploymentState.load(path, spec=paths.spec)
        except JournalError as exc:
            problem = exc.problem
        else:
            if path.exists():
                return RepairResult(str(path), False, notes=["the journal is sound: nothing "
                                                             "to repair"])
            if not paths.versions_dir.is_dir():
                return RepairResult(str(path), False, notes=["nothing was deployed here: no "
                                                             "journal is needed"])
            problem = "the file is missing"
        broken = keep_broken(path)
        state, base = _base(path)
        notes = observe_into(paths, state)
        state.record("journal-repaired", problem=problem, broken_copy=broken and broken.name,
                     base=base)
        state.save(path)
        return RepairResult(
            str(path), True, problem, str(broken) if broken else None, base, state.current,
            state.router.port,
            [{"version": v.version, "status": str(v.status), "pid": v.pid, "port": v.port,
              "model_tag": v.model_tag} for v in state.versions],
            [entry.get("model_tag") for entry in _promotions(paths)], notes)


def keep_broken(path: Path) -> Path | None:
    """Move the unusable journal (a file or whatever stands in its place) aside as
    <name>.broken-<n>, the first n free; None when there is none."""
    if not path.exists() and not path.is_symlink():
        return None
    n = 1
    while True:
        target = path.with_name(f"{path.name}.broken-{n}")
        if not target.exists() and not target.is_symlink():
            os.rename(path, target)
            return target
        n += 1


def _base(path: Path) -> tuple[DeploymentState, str]:
    previous = previous_copy(path)
    try:
        state = parse_journal(previous.read_bytes())
    except (OSError, ValueError):
        return DeploymentState(), "nothing (no previous good copy)"
    return state, f"the previous good copy {previous}"


def observe_into(paths: ProjectPaths, state: DeploymentState) -> list[str]:
    """Make the record say what is observed; returns what it found, one line each."""
    notes = []
    found: dict[str, list[procs.OwnedProcess]] = {}
    for process in procs.owned(paths.project_id):
        found.setdefault(role_of(paths, process.owner), []).append(process)
    if state.deploy or state.journal:
        notes.append("the previous copy recorded work in progress; no deploy is at work now")
    state.deploy, state.journal = {}, []
    _versions_on_disk(paths, state)
    for v in state.versions:
        notes += _observe_version(paths, v, found.pop(f"version/{v.version}", []))
    for role in sorted(r for r in found if r.startswith("version/")):
        v = Version(role.split("/", 1)[1], created_at=round(time.time(), 3))
        if VERSION_NAME.fullmatch(v.version):
            state.versions.append(v)
            notes += _observe_version(paths, v, found.pop(role))
    state.versions.sort(key=_order)
    notes += _observe_router(paths, state, found.pop("router", []))
    notes += _observe_cluster(paths, state, found.pop(ray_cluster.ROLE, []))
    for role, processes in sorted(found.items()):
        notes.append(f"{len(processes)} processes of {role} run with no deploy at work: the "
                     "next deploy, rollback or down stops them")
    _choose_current(paths, state, notes)
    return notes


def _versions_on_disk(paths: ProjectPaths, state: DeploymentState) -> None:
    """Every version whose build is kept (.mlstack/versions/<v>) has a record."""
    if not paths.versions_dir.is_dir():
        return
    for folder in sorted(paths.versions_dir.iterdir()):
        if folder.is_dir() and VERSION_NAME.fullmatch(folder.name) and not state.get(folder.name):
            state.versions.append(Version(folder.name, status=VersionStatus.STOPPED,
                                          created_at=round(folder.stat().st_mtime, 3)))


def _observe_version(paths: ProjectPaths, v: Version,
                     processes: list[procs.OwnedProcess]) -> list[str]:
    owner = version_owner(paths, v.version)
    report = supervisor_report(paths, v.version)
    pids = {p.pid for p in processes}
    roots = [p for p in processes if p.ppid not in pids]
    supervisor = report.get("supervisor_pid") if report.get("supervisor_pid") in pids else next(
        (p.pid for p in roots if "mlstack.ops.local.supervisor" in p.command), None)
    if supervisor is None or not procs.is_owned(supervisor, owner):
        if v.status in RUNNING:
            v.status = VersionStatus.STOPPED
        v.pid = None
        return [f"{v.version}: {len(processes)} processes run without a supervisor: the next "
                "deploy, rollback or down stops them"] if processes else []
    v.pid = supervisor
    v.port = _int_option(_argv(supervisor), "--port") or report.get("port") or v.port
    v.model_tag = _environ(supervisor).get(ENV_MODEL_TAG) or v.model_tag
    if v.status not in RUNNING:
        v.status = VersionStatus.READY
    if not v.metrics:
        v.metrics = next((e.get("metrics") or {} for e in _promotions(paths)
                          if e.get("model_tag") == v.model_tag), {})
    return [f"{v.version} runs (supervisor pid {v.pid}, port {v.port}, model "
            f"{v.model_tag or 'unknown'})"]


def _observe_router(paths: ProjectPaths, state: DeploymentState,
                    processes: list[procs.OwnedProcess]) -> list[str]:
    pid = next((p.pid for p in processes if "mlstack.ops.local.router" in p.command), None)
    limits = state.router.limits or _table_limits(paths)
    if pid is None or not procs.is_owned(pid, router_owner(paths)):
        state.router = RouterInfo(port=state.router.port, limits=limits)  # the port deployed
        state.routes = {}
        return []
    state.router = RouterInfo(pid, _int_option(_argv(pid), "--port") or state.router.port,
                              limits)
    state.routes = {name: weight for name, weight in routed(paths).items()
                    if weight > 0 and _running(state.get(name))}
    return [f"the router runs (pid {pid}, port {state.router.port}), weights {state.routes}"]


def _observe_cluster(paths: ProjectPaths, state: DeploymentState,
                     processes: list[procs.OwnedProcess]) -> list[str]:
    if state.cluster.pid is None and state.cluster.address:
        return []  # a joined cluster (ray://): nothing of it runs here
    pid = next((p.pid for p in processes if "mlstack.ops.local.ray_supervisor" in p.command),
               None)
    if pid is None or not procs.is_owned(pid, ray_cluster.cluster_owner(paths)):
        state.cluster = ClusterInfo()
        return [f"{len(processes)} processes of the Ray cluster run without its supervisor: "
                "the next deploy or down stops them"] if processes else []
    argv = _argv(pid)
    port = _int_option(argv, "--port")
    memory = _int_option(argv, "--memory-bytes")
    shape = dict(state.cluster.shape) or {
        "workers": _int_option(argv, "--workers"), "memory_mib": (memory or 0) // 2**20,
        "cpu": _float_option(argv, "--cpu")}
    state.cluster = ClusterInfo(f"127.0.0.1:{port}", pid, port, shape,
                                _option(argv, "--temp-dir") or "")
    return [f"the Ray cluster runs (supervisor pid {pid}, port {port})"]


def _choose_current(paths: ProjectPaths, state: DeploymentState, notes: list[str]) -> None:
    """The current version: the one the router sends most traffic to; else the recorded
    one; previous: the recorded one, else the newest other version."""
    names = [v.version for v in state.versions]
    routed_to = sorted(state.routes.items(), key=lambda item: (-item[1], _order(item[0])))
    if routed_to:
        state.current = routed_to[0][0]
    elif state.current not in names:
        running = [v.version for v in state.versions if _running(v)]
        state.current = running[-1] if running else None
    current = state.get(state.current)
    if current is not None and _running(current):
        current.status = VersionStatus.SERVING
    for v in state.versions:
        if v is not current and v.status == VersionStatus.SERVING:
            v.status = VersionStatus.READY
    if state.previous not in names or state.previous == state.current:
        older = [n for n in names if n != state.current
                 and (current is None or _order(n) < _order(current))]
        state.previous = older[-1] if older else None
    unknown = [v.version for v in state.versions if not v.model_tag]
    if unknown:
        notes.append(f"the model of {', '.join(unknown)} is not known (not running, no "
                     "previous copy); the model store's promotions are listed")
    if current is not None:
        notes.append(f"current: {current.version} ({current.status})")


def _running(v: Version | None) -> bool:
    return v is not None and v.pid is not None and v.status in RUNNING


def _order(v: Version | str) -> tuple[int, str]:
    name = v if isinstance(v, str) else v.version
    return (int(name[1:]) if name[1:].isdigit() else -1, name)


def _promotions(paths: ProjectPaths) -> list[dict]:
    """The model store's promotions, oldest first (the flows' models file)."""
    try:
        history = json.loads((paths.runtime_state_dir / MODELS_FILE).read_text())["history"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []


def _table_limits(paths: ProjectPaths) -> dict:
    try:
        limits = json.loads(router_config(paths).read_text()).get("limits", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return limits if isinstance(limits, dict) else {}


# -- a process's command line and environment, from /proc --------------------------------------

def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return {}
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def _option(argv: list[str], name: str) -> str | None:
    """The value after `name` up to a `--` (the supervised command's own options)."""
    head = argv[:argv.index("--")] if "--" in argv else argv
    return head[head.index(name) + 1] if name in head[:-1] else None


def _int_option(argv: list[str], name: str) -> int | None:
    value = _option(argv, name)
    return int(value) if value and value.isdigit() else None


def _float_option(argv: list[str], name: str) -> float | None:
    try:
        return float(_option(argv, name) or "")
    except ValueError:
        return None
