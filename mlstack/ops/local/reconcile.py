"""What runs against what the state records: observe it truthfully, and reconcile it.

`observe` reads, changes nothing (status uses it): every process carrying the project's owner
marker, grouped by role; each version's supervisor and process tree; the router's table and
the weights it applies; a deploy or journaled action that was interrupted.

`reconcile` makes what runs equal what is recorded (deploy, rollback and down call it, under
the project lock, before anything else): an interrupted deploy's version is marked failed and
stopped, every process of the project that is not the current version's tree or the router
is stopped (orphaned workers, unrecorded listeners, old versions), a current version recorded
as serving whose supervisor died is restarted, and the router's weights are set to the
recorded ones ({current: 100}). A current version whose restart fails is marked failed, its
tree stopped, and nothing serves (no weights, no router). The router's port held by another
program is an error: that program is neither adopted nor stopped. With serve=False (down)
nothing is kept; a current version that `down` stopped stays stopped.

`stop_orphaned_jobs` (status calls it) stops workers and flows no command runs: only while
the project lock is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlstack.diagnostics.errors import UsageError
from mlstack.ops.local import experiment, procs, ray_cluster
from mlstack.ops.local.router import write_table
from mlstack.ops.local.services import (
    ensure_router,
    role_of,
    route,
    routed,
    router_alive,
    router_config,
    start_version,
    stop_router,
    stop_version,
    supervised,
    supervisor_report,
)
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths, project_lock

RUNNING = (VersionStatus.STARTING, VersionStatus.READY, VersionStatus.SERVING)
JOB_ROLES = ("worker", "flow")  # run only while a command holds the project lock
KEPT_ROLES = ("keeper", "sidecar")  # kept by reconcile(serve=True): not a version's to stop


@dataclass
class VersionView:
    version: str
    recorded: str  # the status the state records
    supervisor_alive: bool
    pids: list[int]  # every process carrying the version's marker (the supervisor too)
    report: dict  # what its supervisor last reported

    @property
    def orphaned(self) -> bool:
        """Processes of the version run, but its supervisor does not."""
        return not self.supervisor_alive and bool(self.pids)

    @property
    def state(self) -> str:
        """The status as observed: the recorded one while it runs as recorded; else dead,
        orphaned, restarting (by its supervisor) or an unrecorded listener."""
        if self.recorded in RUNNING:
            if self.supervisor_alive:
                reported = self.report.get("state")
                return "restarting" if reported in ("restarting", "starting") and \
                    self.recorded == VersionStatus.SERVING else self.recorded
            return "orphaned" if self.pids else "dead"
        return "unrecorded" if self.pids else self.recorded


@dataclass
class Observation:
    roles: dict[str, list[procs.OwnedProcess]] = field(default_factory=dict)
    versions: dict[str, VersionView] = field(default_factory=dict)
    router_alive: bool = False
    table: dict[str, int] = field(default_factory=dict)  # the router's table file
    deploy_running: bool = False  # a deploy process is at work now
    problems: list[str] = field(default_factory=list)


def observe(paths: ProjectPaths, state: DeploymentState) -> Observation:
    seen = Observation()
    for process in procs.owned(paths.project_id):
        seen.roles.setdefault(role_of(paths, process.owner), []).append(process)
    for v in state.versions:
        pids = [p.pid for p in seen.roles.get(f"version/{v.version}", [])]
        seen.versions[v.version] = VersionView(v.version, str(v.status), supervised(paths, v),
                                               pids, supervisor_report(paths, v.version))
    seen.router_alive = router_alive(paths, state)
    seen.table = routed(paths)
    deploy_pid = state.deploy.get("pid")
    seen.deploy_running = bool(deploy_pid) and procs.is_alive(deploy_pid)
    seen.problems = _problems(paths, state, seen)
    return seen


def _problems(paths: ProjectPaths, state: DeploymentState, seen: Observation) -> list[str]:
    out = []
    if state.deploy and not seen.deploy_running:
        out.append(f"the deploy of {state.deploy.get('version')} was interrupted during "
                   f"{state.deploy.get('stage') or 'its start'} (its process "
                   f"{state.deploy.get('pid')} is gone); the next deploy, rollback or down "
                   "reconciles it")
    elif not seen.deploy_running:
        for entry in state.journal:
            out.append(f"'{entry['action']}' of {entry.get('version', '-')} was interrupted")
    for view in seen.versions.values():
        if view.version == state.current:
            if view.state in ("dead", "orphaned"):
                out.append(f"{view.version} (current) is {view.state}: its supervisor is gone"
                           + (f", {len(view.pids)} of its processes still run"
                              if view.pids else ""))
        elif view.state == "orphaned":
            out.append(f"{view.version}: {len(view.pids)} processes run without a supervisor")
        elif view.state == "unrecorded":
            out.append(f"{view.version} is recorded {view.recorded} but "
                       f"{len(view.pids)} of its processes run")
    recorded_versions = {f"version/{v.version}" for v in state.versions}
    for role, found in sorted(seen.roles.items()):
        if role.startswith("version/") and role not in recorded_versions:
            out.append(f"{len(found)} processes of an unrecorded {role} run")
        elif role.startswith("worker/") and not seen.deploy_running:
            out.append(f"{len(found)} processes of {role} run with no deploy at work")
        elif role == "router" and not seen.router_alive:
            out.append(f"{len(found)} router processes run that are not the recorded router")
    if state.cluster.pid is not None and not ray_cluster.alive(paths, state):
        out.append("the Ray cluster's supervisor is gone" + (
            f", {len(seen.roles[ray_cluster.ROLE])} of its processes still run"
            if seen.roles.get(ray_cluster.ROLE) else "") + "; the next deploy starts it")
    elif state.cluster.pid is not None and ray_cluster.report(paths).get("state") != "ready":
        report = ray_cluster.report(paths)
        out.append(f"the Ray cluster is {report.get('state', 'unknown')}: "
                   f"{report.get('reason') or 'no reason reported'}")
    current = state.get(state.current)
    if current is not None and current.status == VersionStatus.SERVING \
            and not seen.router_alive:
        port = state.router.port
        foreign = bool(port and "router" not in seen.roles and not procs.port_is_free(port))
        out.append("the router is not running" + (
            f"; its port {port} is taken by another program" if foreign else ""))
    if seen.router_alive and seen.table != state.routes:
        out.append(f"the router's table {seen.table} differs from the recorded weights "
                   f"{state.routes}")
    return out


def reconcile(paths: ProjectPaths, state: DeploymentState, *, serve: bool,
              port: int | None = None, restart: bool = True,
              keep_trying: bool = False, keep_experiment: bool = False) -> list[str]:
    """Make what runs equal what is recorded; returns what it did, one line each. The
    caller holds the project lock (no deploy is at work). `keep_trying` (the keeper): a
    current version whose restart failed stays the one to serve, its failure noted, and the
    router stays up answering 503 with Retry-After at once, so the next try brings service
    back without a command; otherwise it is failed and nothing serves. `keep_experiment`
    (the keeper, a deploy's first step): a running A/B experiment whose candidate runs
    keeps its candidate and its split; otherwise (down, rollback, a candidate gone) the
    experiment ends and the control serves alone."""
    notes = _close_interrupted(state)
    current = state.get(state.current) if serve else None
    if current is not None and current.status != VersionStatus.SERVING:
        current = None  # stopped by `down` (or failed to restart): nothing is to serve
    candidate = _kept_candidate(paths, state, current) if keep_experiment else None
    if experiment.running(state) and candidate is None:
        trial = state.experiment
        experiment.end(state, "its candidate is gone" if keep_experiment
                       else "a command (rollback or down) came before its decision")
        notes.append(f"ended the {experiment.what(trial)} {trial['name']}: {trial['reason']}")
    if current is not None and supervised(paths, current):
        # traffic leaves what is about to stop before it stops
        notes += _serve(paths, state, current, port, with_experiment=candidate is not None)
    keep = {f"version/{current.version}", "router"} if current else set()
    if candidate is not None:
        keep.add(f"version/{candidate.version}")
    if serve and ray_cluster.alive(paths, state):
        keep.add(ray_cluster.ROLE)  # the flows' cluster outlives a deploy; `down` stops it
    roles = {role_of(paths, p.owner) for p in procs.owned(paths.project_id)}
    if serve:  # the keeper and the sidecars outlive a deploy; `down` stops them
        keep |= {r for r in roles if r in KEPT_ROLES or r.split("/")[0] in KEPT_ROLES}
    for role in sorted(roles - keep):
        notes.append(_stop_role(paths, state, role))
    for v in state.versions:
        if v is not current and v is not candidate and v.status in RUNNING:
            v.status = VersionStatus.STOPPED
    if current is None:
        return notes + _serve_nothing(paths, state)
    if not supervised(paths, current):
        left = stop_version(paths, current)  # what a dead supervisor left behind
        if left:
            notes.append(f"could not stop {len(left)} leftover processes of {current.version}")
        if restart:
            notes.append(_restart(paths, state, current))
        if current.status != VersionStatus.SERVING and keep_trying:
            current.status = VersionStatus.SERVING  # still the one to serve: tried again
            notes += _serve(paths, state, current, port)
            state.save()
            return notes
        if current.status != VersionStatus.SERVING:  # its restart failed: nothing serves,
            return notes + _serve_nothing(paths, state)  # as the next reconcile would say
        notes += _serve(paths, state, current, port)
    state.save()
    return notes


def repairs_needed(paths: ProjectPaths, state: DeploymentState,
                   seen: Observation) -> list[str]:
    """What reconcile(serve=True) would repair now, one line each ([] when nothing): an
    interrupted deploy or action, the current version serving on record whose supervisor is
    gone, its router gone or applying other weights, processes nothing accounts for. The
    keeper asks this every pass and reconciles only when it says something."""
    if seen.deploy_running:
        return []  # a deploy at work owns what runs
    out = []
    if state.deploy:
        out.append(f"the deploy of {state.deploy.get('version')} was interrupted")
    out += [f"'{e.get('action')}' of {e.get('version', '-')} was interrupted"
            for e in state.journal]
    current = state.get(state.current)
    # the current version, when it serves on record
    serving = current if current is not None and current.status == VersionStatus.SERVING \
        else None
    if serving is not None and seen.versions[serving.version].state in ("dead", "orphaned"):
        out.append(f"{serving.version}'s supervisor is gone")
    if serving is not None and not seen.router_alive:
        out.append("the router is not running")
    elif serving is not None and seen.table != state.routes:
        out.append(f"the router's table {seen.table} is not the recorded {state.routes}")
    keep = {"router", f"version/{serving.version}"} if serving is not None else set()
    trial = experiment.running(state)
    if serving is not None and trial is not None and trial["control"] == serving.version:
        keep.add(f"version/{trial['candidate']}")
        candidate = seen.versions.get(trial["candidate"])
        if candidate is not None and candidate.state in ("dead", "orphaned"):
            out.append(f"the A/B candidate {trial['candidate']}'s supervisor is gone")
    for role in sorted(seen.roles):
        base = role.split("/")[0]
        if role not in keep and base not in KEPT_ROLES and base != ray_cluster.ROLE:
            out.append(f"{role} runs and nothing accounts for it")
    return out


def stop_orphaned_jobs(paths: ProjectPaths) -> list[str]:
    """Stop the worker and flow processes of the project while no command runs them (none
    holds the project lock): what a killed deploy or `mlstack run` left behind, such as
    Prefect's temporary API server (uvicorn), which outlives its worker reparented to PID 1
    and carries the worker's owner marker in the environment it inherited. Returns what it
    stopped, one line each; nothing while a command holds the lock."""
    try:
        with project_lock(paths, keeper_wait=0.0):  # status does not wait for a repair
            roles = {role_of(paths, p.owner) for p in procs.owned(paths.project_id)}
            notes = []
            for role in sorted(r for r in roles if r.split("/")[0] in JOB_ROLES):
                left = procs.stop_owned(f"{paths.project_id}/{role}", timeout=5.0)
                notes.append(f"stopped {role}, left by a command that is gone" + (
                    f" ({len(left)} processes would not stop)" if left else ""))
            return notes
    except UsageError:  # a command at work: its workers and flows are its own
        return []


def _serve_nothing(paths: ProjectPaths, state: DeploymentState) -> list[str]:
    """No version is to serve: no weights, an empty table, no router."""
    notes = ["stopped the router: no version serves"] if router_alive(paths, state) else []
    if state.routes or routed(paths):
        state.routes, state.traffic = {}, {}
        write_table(router_config(paths), [], state.router.limits)
    stop_router(paths, state)
    state.save()
    return notes


def ensure_project_router(paths: ProjectPaths, state: DeploymentState, port: int) -> None:
    """services.ensure_router, refusing a port another program holds: that program is
    neither adopted (the router's readiness check would take its answer for ours) nor
    stopped. Routers of ours that are not the recorded one are stopped first."""
    if not router_alive(paths, state):
        recorded = state.router.port
        stop_router(paths, state)  # a stray of ours (by marker) may hold the port
        state.router.port = recorded
    elif state.router.port == port:
        return
    if not procs.port_is_free(port):
        state.save()  # the record names no PID that is not the project's router
        raise RuntimeError(f"port {port} on 127.0.0.1 is taken by another program, not "
                           "this project's router")
    ensure_router(paths, state, port)


def _kept_candidate(paths: ProjectPaths, state: DeploymentState,
                    current: Version | None) -> Version | None:
    """The candidate of the A/B experiment that runs, when it is to be kept: the control is
    the current version and serves, the candidate is READY under its supervisor."""
    trial = experiment.running(state)
    if trial is None or current is None or current.version != trial["control"]:
        return None
    candidate = state.get(trial["candidate"])
    if candidate is None or candidate.status != VersionStatus.READY \
            or not supervised(paths, candidate):
        return None
    return candidate


def _serve(paths: ProjectPaths, state: DeploymentState, current: Version,
           port: int | None, with_experiment: bool = False) -> list[str]:
    """The router runs and sends everything to the current version, as recorded (or, with
    a running experiment kept, the experiment's split)."""
    notes = []
    if not router_alive(paths, state) or (port and state.router.port != port):
        notes.append(f"started the router on port {port or state.router.port or 3000}")
    ensure_project_router(paths, state, port or state.router.port or 3000)
    recorded, table, weights = state.routes, routed(paths), {current.version: 100}
    traffic = None
    if with_experiment:
        trial = state.experiment
        weights = {trial["control"]: 100 - trial["split"], trial["candidate"]: trial["split"]}
        if experiment.kind_of(trial) == experiment.AB:  # a canary's guard draws at random
            traffic = {"sticky": {"experiment": trial["name"], "key": trial["key"]}}
    if recorded != weights or table != weights or (traffic or {}) != state.traffic:
        route(paths, weights, state, traffic)
        notes.append(f"router weights {recorded} -> {weights}" if recorded != weights else
                     f"router table {table} rewritten to the recorded weights {weights}")
    return notes


def _close_interrupted(state: DeploymentState) -> list[str]:
    notes = []
    if state.deploy:
        name, stage = state.deploy.get("version"), state.deploy.get("stage") or "its start"
        version = state.get(name)
        if version is not None and name != state.current and version.status not in (
                VersionStatus.FAILED, VersionStatus.ROLLED_BACK):
            version.status = VersionStatus.FAILED
            version.failure = f"the deploy was interrupted during {stage}"
        state.record("deploy-interrupted", version=name, stage=stage,
                     pid=state.deploy.get("pid"))
        notes.append(f"the deploy of {name} was interrupted during {stage}: {name} failed")
        share = state.routes.get(name or "", 0)
        if share and name != state.current:  # a canary nothing judges any more: undone
            state.record("canary-rolled-back", version=name, weight=share,
                         to=state.current)
            notes.append(f"its canary ({share}% of traffic) was rolled back to "
                         f"{state.current or 'nothing'}")
        state.deploy = {}
    for entry in state.journal:
        state.record("interrupted", **{k: v for k, v in entry.items() if k != "at"})
        notes.append(f"'{entry['action']}' of {entry.get('version', '-')} had not finished")
    state.journal = []
    state.save()
    return notes


def _stop_role(paths: ProjectPaths, state: DeploymentState, role: str) -> str:
    if role.startswith("version/"):
        version = state.get(role.split("/", 1)[1])
        left = stop_version(paths, version) if version else procs.stop_owned(
            f"{paths.project_id}/{role}")
        if version is not None and version.status in RUNNING:
            version.status = VersionStatus.STOPPED
    elif role == "router":
        left = stop_router(paths, state)
    elif role.split("/")[0] == ray_cluster.ROLE:
        left = ray_cluster.stop(paths, state)
    else:
        left = procs.stop_owned(f"{paths.project_id}/{role}")
    return f"stopped {role}" + (f" ({len(left)} processes would not stop)" if left else "")


def _restart(paths: ProjectPaths, state: DeploymentState, version: Version) -> str:
    code_dir = paths.versions_dir / version.version
    if not code_dir.is_dir():
        version.status = VersionStatus.FAILED
        version.failure = f"restart failed: its build is gone ({code_dir})"
        return f"cannot restart {version.version}: its build is gone ({code_dir})"
    try:
        start_version(paths, version, code_dir, state)
    except RuntimeError as exc:
        stop_version(paths, version)  # a supervisor the wait gave up on may still run
        version.status = VersionStatus.FAILED
        version.failure = f"restart failed: {exc}"
        return f"could not restart {version.version}: {str(exc).splitlines()[0]}"
    version.status = VersionStatus.SERVING
    state.record("restart", version=version.version, pid=version.pid)
    return f"restarted {version.version} (pid {version.pid})"

