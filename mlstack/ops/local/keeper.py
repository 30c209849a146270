"""The project keeper: between commands, nothing of a deployed project stays dead.

Run as `python -m mlstack.ops.local.keeper --spec <mlstack.yaml>` (deploy and rollback start
it with `ensure_running`, marked `<project id>/keeper`, see procs.py). Every PASS_EVERY
seconds it observes the project (reconcile.observe) and, when reconcile.repairs_needed names
something, repairs it with reconcile(serve=True) under the project lock, as a command would:

- the serving version's supervisor gone: the version is restarted (its tree, on its port);
- the router gone: it is started again on its recorded port, with the recorded weights;
- a deploy whose process is gone (killed mid-canary, say): the candidate is failed and
  stopped, and its canary traffic goes back to the serving version;
- processes nothing accounts for (a killed deploy's workers) are stopped;
- the project's sidecars (sidecars.py) are kept up while a version serves.

It never fights a command: it repairs only when it gets the project lock at once (a command
that finds the keeper holding it waits for the repair, see paths.project_lock), and re-reads
the journal under the lock. Each repair is recorded in the journal (`keeper-repair`); the
keeper's own status file (.mlstack/keeper-status.json: last pass, recent repairs) is what
`status_report` reads.

Who keeps the keeper: every version's supervisor (supervisor.py) checks every few seconds
that it runs and starts it again when it does not, unless `down` stopped it:
.mlstack/keeper.json says whether a keeper is wanted (`stop` writes stopped, `ensure_running`
clears it), and a keeper that finds itself unwanted exits. One keeper per project: each
holds .mlstack/keeper.lock for its life; a second one exits at once.

Library code imports only mlstack's ops modules (no BentoML, Prefect or Feast); the sidecars'
declarations need the serving version's IR, read from its build's manifest when there are
providers.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

from mlstack.diagnostics.errors import JournalError, UsageError
from mlstack.ops.local import experiment, procs, sidecars
from mlstack.ops.local.reconcile import observe, reconcile, repairs_needed
from mlstack.ops.local.state import DeploymentState, VersionStatus, write_atomically
from mlstack.ops.paths import ProjectPaths, project_lock

ROLE = "keeper"
PASS_EVERY = 2.0  # seconds between passes
KEPT_REPAIRS = 20  # repairs the status file keeps
RETRY_FIRST, RETRY_LONGEST = 5.0, 300.0  # seconds before trying a failed restart again


def owner(paths: ProjectPaths) -> str:
    return f"{paths.project_id}/{ROLE}"


def wanted_file(paths: ProjectPaths) -> Path:
    """{"spec": ..., "stopped": bool}: whether a keeper is wanted (written by commands)."""
    return paths.state_dir / "keeper.json"


def status_file(paths: ProjectPaths) -> Path:
    """The keeper's own report (written only by the keeper)."""
    return paths.state_dir / "keeper-status.json"


def log_file(paths: ProjectPaths) -> Path:
    return paths.logs_dir / "keeper.log"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def running(paths: ProjectPaths) -> list[procs.OwnedProcess]:
    return procs.owned(owner(paths))


def wanted(state_dir: Path) -> str | None:
    """The spec a keeper is wanted for (None: none is, or `down` stopped it). Takes the state
    folder only: a version's supervisor asks it without a ProjectPaths."""
    data = _read(state_dir / "keeper.json")
    spec = data.get("spec")
    return spec if isinstance(spec, str) and not data.get("stopped") else None


def ensure_running(paths: ProjectPaths, revive: bool = True) -> int | None:
    """Start the keeper unless one runs; returns its PID (None: it exited at once, e.g. one
    started beside it holds the keeper lock and will be found next time). With `revive` (a
    command: deploy, rollback) a keeper `down` stopped is wanted again from now on; without
    (a supervisor), the record is left as it is, so a keeper started while `down` stops
    the project sees it is not wanted and exits."""
    if revive:
        _write(wanted_file(paths), {"spec": str(paths.spec), "stopped": False})
    found = running(paths)
    if found:
        return found[0].pid
    argv = [sys.executable, "-m", "mlstack.ops.local.keeper", "--spec", str(paths.spec)]
    env = dict(os.environ)  # a version's supervisor may start it: not with its code folder
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and not
            Path(p).resolve().is_relative_to(paths.state_dir.resolve())]
    env["PYTHONPATH"] = os.pathsep.join(kept)
    pid = procs.start_background(argv, cwd=paths.state_dir, env=env, log=log_file(paths),
                                 owner=owner(paths))
    return pid if procs.is_alive(pid) else None


def stop(paths: ProjectPaths, timeout: float = 10.0) -> list[int]:
    """Stop the keeper and keep it stopped (no supervisor starts it again until the next
    deploy or rollback); returns the PIDs that would not stop."""
    spec = _read(wanted_file(paths)).get("spec") or str(paths.spec)
    _write(wanted_file(paths), {"spec": spec, "stopped": True})
    return procs.stop_owned(owner(paths), timeout=timeout)


def status_report(paths: ProjectPaths) -> dict:
    """The keeper as observed: running (its PID by marker), wanted, its last pass and its
    recent repairs (newest last), and what went wrong in its last pass."""
    found = running(paths)
    report = _read(status_file(paths))
    last = report.get("last_pass_at")
    return {"running": bool(found), "pid": found[0].pid if found else None,
            "wanted": wanted(paths.state_dir) is not None,
            "last_pass_at": last,
            "seconds_since_last_pass": round(time.time() - last, 1)
            if isinstance(last, int | float) else None,
            "passes": report.get("passes", 0), "repairs": report.get("repairs", []),
            "problem": report.get("problem", "")}


# -- one pass -----------------------------------------------------------------------------------

class Keeper:
    def __init__(self, paths: ProjectPaths):
        self.paths = paths
        self.systems: dict[str, object] = {}  # version -> its IR (None: unreadable)
        self.report = _read(status_file(paths))
        self.report.update(pid=None, passes=0, problem="")
        self.failed_restarts, self.retry_at = 0, 0.0  # the backoff of a failing restart
        self.look_at = 0.0  # when the running A/B experiment is looked at next

    def run_pass(self) -> list[str]:
        """Observe, and repair what is broken while no command holds the lock; returns what
        was done, one line each."""
        paths, done, problem = self.paths, [], ""
        try:
            state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
            needed = repairs_needed(paths, state, observe(paths, state))
            if needed and time.time() < self.retry_at:
                needed = []  # a restart failed: the next try waits its backoff
            declared = self.sidecars(state)
            look = experiment.running(state) is not None and time.time() >= self.look_at
            if needed or declared or look:
                with project_lock(paths, holder=ROLE, keeper_wait=0.0):
                    done = self.repair(declared)
                    if look:
                        done += self.decide()
        except UsageError:
            pass  # a command at work: never fight it; the next pass looks again
        except JournalError as exc:  # `mlstack repair` is the user's to run
            problem = f"{exc.message}; {exc.hint}"
        except Exception as exc:  # noqa: BLE001 - e.g. the router's port taken: the keeper
            # reports it and looks again next pass rather than die (and be restarted) on it
            problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.report["passes"] = self.report.get("passes", 0) + 1
        self.report.update(last_pass_at=round(time.time(), 3), problem=problem)
        self.save()
        return done

    def repair(self, declared: list) -> list[str]:
        """Under the project lock: the journal read again (a command may have just ended)."""
        paths = self.paths
        state = DeploymentState.load(paths.deployments_file, spec=paths.spec)
        needed = repairs_needed(paths, state, observe(paths, state))
        done = []
        if needed and time.time() >= self.retry_at:
            done = reconcile(paths, state, serve=True, keep_trying=True, keep_experiment=True)
            state.record("keeper-repair", reasons=needed, done=done)
            state.save()
            self.backoff(failed=any(d.startswith("could not restart") for d in done))
        current = state.get(state.current)
        if declared and current is not None and current.status == VersionStatus.SERVING:
            started = sidecars.ensure(paths, declared)
            if started:
                state.record("keeper-repair", reasons=["a sidecar was down"], done=started)
                state.save()
            done += started
        if done:
            repairs = self.report.get("repairs", []) + [
                {"at": round(time.time(), 3), "reasons": needed, "done": done}]
            self.report["repairs"] = repairs[-KEPT_REPAIRS:]
        return done

    def decide(self) -> list[str]:
        """Under the project lock: a look at the running A/B experiment, its decision
        carried out (ops.local.experiment)."""
        self.look_at = time.time() + experiment.LOOK_EVERY
        state = DeploymentState.load(self.paths.deployments_file, spec=self.paths.spec)
        try:
            return experiment.advance(self.paths, state)
        except (OSError, ValueError) as exc:  # an unreadable log: said, looked at again
            self.report["experiment_problem"] = f"{type(exc).__name__}: {exc}"
            return []

    def backoff(self, failed: bool) -> None:
        """After a failed restart the next try waits 5 s, then 10, 20 ... up to 5 minutes; a
        repair that restarted nothing in vain resets it."""
        if not failed:
            self.failed_restarts, self.retry_at = 0, 0.0
            return
        self.failed_restarts += 1
        wait = min(RETRY_LONGEST, RETRY_FIRST * 2 ** (self.failed_restarts - 1))
        self.retry_at = time.time() + wait
        self.report["retry_at"] = round(self.retry_at, 3)

    def sidecars(self, state: DeploymentState) -> list:
        """What the providers declare for the serving version's system ([] while nothing
        serves, or its IR cannot be read)."""
        current = state.get(state.current)
        if current is None or current.status != VersionStatus.SERVING:
            return []
        if current.version not in self.systems:
            self.systems[current.version] = _system(self.paths, current.version)
        system = self.systems[current.version]
        return sidecars.declared(self.paths, system) if system is not None else []

    def save(self) -> None:
        _write(status_file(self.paths), self.report)


def _system(paths: ProjectPaths, version: str):
    """The IR the version was compiled from (its build's manifest), None when unreadable."""
    from mlstack.workspace.manifest import MANIFEST_NAME, read_manifest

    snapshot = paths.versions_dir / version
    try:
        manifest = read_manifest(snapshot) if (snapshot / MANIFEST_NAME).is_file() else None
    except Exception:  # a damaged build: no sidecars, the versions are still kept
        return None
    return manifest.previous_system() if manifest else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--every", type=float, default=PASS_EVERY)
    args = parser.parse_args(argv)
    paths = ProjectPaths.for_spec(args.spec)
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.state_dir / "keeper.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another keeper keeps this project
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
        keeper = Keeper(paths)
        keeper.report.update(pid=os.getpid(), started_at=round(time.time(), 3))
        while not stopping and wanted(paths.state_dir) is not None:
            keeper.run_pass()
            deadline = time.monotonic() + args.every
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
