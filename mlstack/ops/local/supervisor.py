"""The supervisor of one service version: owns its whole process tree, restarts it, reports.

Run as `python -m mlstack.ops.local.supervisor --status FILE --port P -- ARGV...` (deploy
starts it in its own session, marked with the version's owner marker, see procs.py). It starts
ARGV (`bentoml serve ...`) in a session of its own, with a parent-death signal, and watches it:

- the first start must become ready (GET /readyz answers 200) within --ready-timeout, else
  the supervisor reports `failed` and exits 1 (deploy shows the log);
- afterwards, when the serve process exits, or /readyz has not answered 200 for
  --unhealthy-after seconds, every process of the tree is stopped (found by the owner
  marker, since BentoML's workers leave the session with setsid) and ARGV starts again on the
  same port, after a backoff (1, 2, 4 ... 30 s; reset after a minute of health). BentoML
  (circus) restarts a crashed worker itself; the supervisor counts those restarts;
- SIGTERM stops the tree and the supervisor; if the supervisor dies anyway, the serve process
  gets SIGTERM (parent-death signal) and the project's keeper (keeper.py) starts the version
  again, or the next command reconciles what is left by marker;
- every KEEPER_EVERY seconds it checks that the project's keeper runs and starts it when it
  does not (unless `down` stopped it: .mlstack/keeper.json), so the keeper and the
  supervisors keep each other: no single kill leaves the project unattended.

The status file (JSON, replaced atomically) says: state (starting, ready, restarting,
failed, stopping, stopped), the supervisor's and the serve process's PIDs, the workers' PIDs,
restarts (of the tree) and worker_restarts (by circus), the last reason, timestamps.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from mlstack.ops.local import procs

POLL_SECONDS = 1.0
HEALTH_EVERY = 2.0  # seconds between /readyz probes once ready
BACKOFF_MAX = 30.0
HEALTHY_RESETS_BACKOFF = 60.0  # seconds of health after which the backoff starts over
KEEPER_EVERY = 5.0  # seconds between checks that the project's keeper runs


class Supervisor:
    def __init__(self, argv: list[str], port: int, status_file: Path, log: Path,
                 ready_timeout: float, unhealthy_after: float):
        self.argv, self.port, self.status_file, self.log = argv, port, status_file, log
        self.ready_timeout, self.unhealthy_after = ready_timeout, unhealthy_after
        self.owner = os.environ.get(procs.OWNER_ENV, "")
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.info: dict = {"supervisor_pid": os.getpid(), "port": port, "restarts": 0,
                           "worker_restarts": 0, "state": "starting", "reason": "",
                           "started_at": round(time.time(), 3)}
        self.workers: set[int] = set()
        self.seen_workers: set[int] = set()  # every worker of the current tree
        self.next_keeper_check = time.monotonic() + KEEPER_EVERY

    # -- the project's keeper -------------------------------------------------------------
    def keep_keeper(self) -> None:
        """Start the project's keeper when it is wanted and does not run. Its state folder is
        where this supervisor's status file lies (.mlstack/supervisors/<version>.json); the
        marker's project id names its processes. Never raises: the tree comes first."""
        now = time.monotonic()
        if now < self.next_keeper_check or "/version/" not in self.owner:
            return
        self.next_keeper_check = now + KEEPER_EVERY
        state_dir = self.status_file.resolve().parent.parent
        try:
            wanted = json.loads((state_dir / "keeper.json").read_text())
        except (OSError, ValueError):
            return  # no deploy asked for a keeper (or one from before keepers)
        spec = wanted.get("spec") if isinstance(wanted, dict) else None
        project_id = self.owner.split("/version/", 1)[0]
        if not isinstance(spec, str) or wanted.get("stopped") \
                or procs.owned(f"{project_id}/keeper"):
            return
        try:  # imported only now: a supervisor stays small while the keeper runs
            from mlstack.ops.local import keeper
            from mlstack.ops.paths import ProjectPaths

            paths = ProjectPaths.for_spec(Path(spec))
            if paths.project_id != project_id or paths.state_dir != state_dir:
                return  # a record that is not this project's: start nothing
            keeper.ensure_running(paths, revive=False)
            self.info["keeper_starts"] = self.info.get("keeper_starts", 0) + 1
        except Exception as exc:  # noqa: BLE001 - a keeper that cannot start is reported
            self.info["keeper_problem"] = f"{type(exc).__name__}: {exc}"[:200]

    # -- reporting ------------------------------------------------------------------------
    def report(self, state: str | None = None, **details) -> None:
        if state:
            self.info["state"] = state
            self.info["since"] = round(time.time(), 3)
        self.info.update(details)
        self.info["serve_pid"] = self.child.pid if self.child and self.child.poll() is None \
            else None
        self.info["worker_pids"] = sorted(self.workers)
        self.info["updated_at"] = round(time.time(), 3)
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info, indent=2, sort_keys=True))
        os.replace(tmp, self.status_file)

    # -- the tree -------------------------------------------------------------------------
    def start_tree(self) -> None:
        self.wait_port_free()
        with open(self.log, "ab") as out:
            self.child = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=procs.parent_death_signal(signal.SIGTERM))
        self.workers, self.seen_workers = set(), set()
        self.report("starting")

    def stop_tree(self, timeout: float = 10.0) -> None:
        """SIGTERM the serve process's group, then every process of the version but this one
        (SIGKILL after `timeout`)."""
        if self.child is not None and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.child.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.owner:
            procs.stop_owned(self.owner, timeout=2.0, keep=os.getpid())
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        self.workers, self.seen_workers = set(), set()

    def wait_port_free(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not procs.port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)

    def track_workers(self) -> None:
        """The tree's processes other than the serve process: a PID not seen before in this
        tree (once its first workers are known) is a worker that circus restarted. Compared
        with every worker seen, not only the last probe's: a probe that falls between a
        worker's death and its replacement sees none, and the replacement still counts."""
        if not self.owner:
            return
        me, serve = os.getpid(), self.child.pid if self.child else None
        now = {p.pid for p in procs.owned(self.owner) if p.pid not in (me, serve)}
        new = now - self.seen_workers
        if self.seen_workers and new:
            self.info["worker_restarts"] += len(new)
            self.info["reason"] = "a worker was restarted by BentoML"
        self.workers = now
        self.seen_workers |= now

    def ready(self, timeout: float = 2.0) -> bool:
        return procs.http_status(f"http://127.0.0.1:{self.port}/readyz", timeout) == 200

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    # -- the loop -------------------------------------------------------------------------
    def wait_ready(self) -> str | None:
        """None once ready; else why not (the serve process exited, or the time ran out)."""
        deadline = time.monotonic() + self.ready_timeout
        assert self.child is not None  # start_tree() started it
        while not self.stopping:
            code = self.child.poll()
            if code is not None:
                return f"the serve process exited with code {code} before it was ready"
            if self.ready():
                return None
            if time.monotonic() > deadline:
                return f"not ready after {self.ready_timeout:g} s"
            self.sleep(0.3)
        return "stopping"

    def watch(self) -> str:
        """Watch a ready tree; return why it must restart ('' when asked to stop)."""
        last_ok = healthy_since = time.monotonic()
        next_probe = 0.0
        assert self.child is not None  # start_tree() started it
        while not self.stopping:
            code = self.child.poll()
            if code is not None:
                return f"the serve process exited with code {code}"
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + HEALTH_EVERY
                if self.ready(timeout=min(5.0, self.unhealthy_after)):
                    last_ok = now
                    if now - healthy_since > HEALTHY_RESETS_BACKOFF:
                        self.info["consecutive_failures"] = 0
                elif now - last_ok > self.unhealthy_after:
                    return f"/readyz has not answered 200 for {self.unhealthy_after:g} s"
                self.track_workers()
                self.keep_keeper()
                self.report()
            self.sleep(POLL_SECONDS)
        return ""

    def run(self) -> int:
        first = True
        self.info["consecutive_failures"] = 0
        while not self.stopping:
            self.start_tree()
            why = self.wait_ready()
            if self.stopping:
                break
            if why is not None:
                self.stop_tree()
                if first:
                    self.report("failed", reason=why)
                    return 1
                self.info["consecutive_failures"] += 1
            else:
                first = False
                self.track_workers()
                self.report("ready", ready_at=round(time.time(), 3))
                why = self.watch()
                if self.stopping:
                    break
                self.stop_tree()
                self.info["consecutive_failures"] += 1
            self.info["restarts"] += 1
            backoff = min(BACKOFF_MAX, 2.0 ** (self.info["consecutive_failures"] - 1))
            self.report("restarting", reason=why, backoff_seconds=backoff)
            self.sleep(backoff)
        self.report("stopping")
        self.stop_tree()
        self.report("stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--unhealthy-after", type=float, default=30.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    supervisor = Supervisor(command, args.port, args.status, args.log, args.ready_timeout,
                            args.unhealthy_after)

    def stop(_signum, _frame) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        return supervisor.run()
    finally:
        if supervisor.child is not None and supervisor.child.poll() is None:
            supervisor.stop_tree()


if __name__ == "__main__":
    raise SystemExit(main())
