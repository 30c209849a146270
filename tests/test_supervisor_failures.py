"""The supervisor's failure paths: a hung service, a first start that fails, the restart
backoff, and the workers BentoML restarts itself.

The process tests run the real supervisor over a stand-in for `bentoml serve` (as
tests/test_supervision.py does; no BentoML). The backoff tests run its restart loop in this
process on a clock of their own: each tree is scripted (how long it lives), nothing starts
and nothing really sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlstack.ops.local import procs, services, supervisor
from mlstack.ops.paths import ProjectPaths
from tests.test_supervision import throwaway_project, wait_for

REPO = Path(__file__).resolve().parent.parent

# `fake_serve.py PORT MODE`; every start appends its PID to starts.txt beside it.
#   ok             answers /readyz 200; hangs on it for good once hang-<its PID> exists
#   exit           exits with code 3 at once
#   never-ready    runs, but /readyz answers 503
#   crash-after-ready  exits with code 5 shortly after its first 200
#   late-respawn   as ok, but starts a dead worker again only after 3 s
# Its worker leaves the session (setsid), as BentoML's do; like circus, the serve process
# starts it again when it dies.
FAKE_SERVE = r'''
import os, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

here = os.path.dirname(os.path.abspath(__file__))
if sys.argv[2:] == ["worker"]:
    os.setsid()
    while True:
        time.sleep(1)
port, mode = int(sys.argv[1]), sys.argv[2]
with open(os.path.join(here, "starts.txt"), "a") as f:
    f.write(f"{os.getpid()}\n")
if mode == "exit":
    sys.exit(3)


def workers():
    while True:
        subprocess.Popen([sys.executable, __file__, str(port), "worker"]).wait()
        time.sleep(3.0 if mode == "late-respawn" else 0.0)


threading.Thread(target=workers, daemon=True).start()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if os.path.exists(os.path.join(here, f"hang-{os.getpid()}")):
            time.sleep(3600)  # alive, listening, and never answering
        code = 503 if mode == "never-ready" else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        if mode == "crash-after-ready":
            threading.Timer(0.3, os._exit, (5,)).start()


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """test_supervision's throwaway project, with this module's stand-in service."""
    yield from throwaway_project(tmp_path, monkeypatch, FAKE_SERVE)


def supervise(paths: ProjectPaths, mode: str, *, ready_timeout: float = 20,
              unhealthy_after: float = 5) -> subprocess.Popen:
    """The real supervisor of version v1 over the stand-in, as deploy starts it (own
    session, the version's marker)."""
    status = services.supervisor_file(paths, "v1")
    status.parent.mkdir(parents=True, exist_ok=True)
    log = paths.logs_dir / "service-v1.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    argv = [sys.executable, "-m", "mlstack.ops.local.supervisor", "--status", str(status),
            "--port", str(port), "--log", str(log), "--ready-timeout", f"{ready_timeout:g}",
            "--unhealthy-after", f"{unhealthy_after:g}", "--", sys.executable,
            str(paths.project_dir / "fake_serve.py"), str(port), mode]
    env = {**os.environ, procs.OWNER_ENV: services.version_owner(paths, "v1")}
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def report(paths: ProjectPaths) -> dict:
    return services.supervisor_report(paths, "v1")


def starts(paths: ProjectPaths) -> list[int]:
    path = paths.project_dir / "starts.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def tree(paths: ProjectPaths) -> list[int]:
    return [p.pid for p in services.version_tree(paths, "v1")]


def ready(paths: ProjectPaths) -> dict:
    return wait_for(lambda: report(paths).get("state") == "ready" and report(paths),
                    what="v1 ready")


# -- a hung service -----------------------------------------------------------------------

def test_a_hung_service_is_restarted_though_its_process_lives(project):
    sup = supervise(project, "ok", unhealthy_after=3)
    serve = ready(project)["serve_pid"]
    (project.project_dir / f"hang-{serve}").touch()  # /readyz stops answering; it lives
    seen = wait_for(lambda: report(project).get("restarts") == 1
                    and report(project).get("state") == "ready" and report(project),
                    what="the hung tree restarted")
    assert seen["reason"] == "/readyz has not answered 200 for 3 s"  # not "exited"
    assert seen["serve_pid"] != serve and not procs.is_alive(serve)
    assert starts(project) == [serve, seen["serve_pid"]]
    assert procs.http_status(f"http://127.0.0.1:{seen['port']}/readyz") == 200
    sup.terminate()
    assert sup.wait(30) == 0 and report(project)["state"] == "stopped"


# -- a first start that fails -------------------------------------------------------------

def test_a_first_start_that_exits_fails_once_and_says_why(project):
    sup = supervise(project, "exit")
    assert sup.wait(30) == 1  # no retry loop: deploy shows the failure
    seen = report(project)
    assert seen["state"] == "failed"
    assert seen["reason"] == "the serve process exited with code 3 before it was ready"
    assert seen["restarts"] == 0 and seen["serve_pid"] is None
    assert len(starts(project)) == 1
    assert tree(project) == []


def test_a_first_start_never_ready_fails_after_its_timeout_and_leaves_nothing(project):
    sup = supervise(project, "never-ready", ready_timeout=2)
    assert sup.wait(30) == 1
    seen = report(project)
    assert seen["state"] == "failed" and seen["reason"] == "not ready after 2 s"
    assert seen["restarts"] == 0 and len(starts(project)) == 1
    assert tree(project) == []  # the live serve process and its worker were stopped


# -- backoff ------------------------------------------------------------------------------

class Clock:
    """The supervisor module's `time` in these tests: sleeping moves the clock."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeTree:
    """A serve process that is ready while it lives and exits with code 1 at `dies_at`."""

    pid = 4242

    def __init__(self, clock: Clock, lives: float):
        self.clock, self.dies_at = clock, clock.now + lives

    def poll(self) -> int | None:
        return None if self.clock.now < self.dies_at else 1


class ScriptedSupervisor(supervisor.Supervisor):
    """The real restart loop (run, wait_ready, watch, sleep); each start gets the next life
    of `lives` (seconds; 0: exits before it is ready); asked to stop after the last."""

    def __init__(self, tmp_path: Path, clock: Clock, lives: list[float]):
        super().__init__(["serve"], 0, tmp_path / "v1.json", tmp_path / "v1.log",
                         ready_timeout=20, unhealthy_after=5)
        self.clock, self.lives = clock, list(lives)
        self.started_at: list[float] = []
        self.restarting: list[tuple[float, float]] = []  # (when, backoff)

    def start_tree(self) -> None:
        if not self.lives:
            self.stopping = True
        self.started_at.append(self.clock.now)
        self.child = FakeTree(self.clock, self.lives.pop(0) if self.lives else 1e9)
        self.report("starting")

    def stop_tree(self, timeout: float = 10.0) -> None:
        self.child.dies_at = min(self.child.dies_at, self.clock.now)

    def ready(self, timeout: float = 2.0) -> bool:
        return self.child.poll() is None

    def report(self, state: str | None = None, **details) -> None:
        super().report(state, **details)
        if state == "restarting":
            self.restarting.append((self.clock.now, details["backoff_seconds"]))


def scripted_run(tmp_path, monkeypatch, lives: list[float]) -> ScriptedSupervisor:
    monkeypatch.delenv(procs.OWNER_ENV, raising=False)
    clock = Clock()
    monkeypatch.setattr(supervisor, "time", clock)
    sup = ScriptedSupervisor(tmp_path, clock, lives)
    assert sup.run() == 0
    return sup


def test_the_backoff_doubles_after_each_failure_up_to_its_cap(tmp_path, monkeypatch):
    # ready for 5 s, then dies; from the third start on, two that die before they are ready
    lives = [5, 5, 0, 0, 5, 5, 5, 5, 5]
    sup = scripted_run(tmp_path, monkeypatch, lives)
    assert [b for _, b in sup.restarting] == [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert sup.info["restarts"] == len(lives)
    assert sup.info["state"] == "stopped"  # a later start that fails is retried, not fatal
    # each start waited out the backoff reported before it
    for (when, backoff), started in zip(sup.restarting, sup.started_at[1:], strict=True):
        assert started - when == pytest.approx(backoff)


def test_a_minute_of_health_resets_the_backoff(tmp_path, monkeypatch):
    sup = scripted_run(tmp_path, monkeypatch, [5, 5, 5, 50, 5, 120, 5, 5])
    # 50 s of health is not enough to start over; 120 s is
    assert [b for _, b in sup.restarting] == [1, 2, 4, 8, 16, 1, 2, 4]


def test_restarts_after_a_crash_wait_longer_each_time(project):
    """End to end: a service that dies each time soon after it is ready."""
    sup = supervise(project, "crash-after-ready")
    backoffs: dict[int, float] = {}

    def third_restart() -> bool:
        seen = report(project)
        if seen.get("restarts"):
            backoffs[seen["restarts"]] = seen["backoff_seconds"]
            assert seen["reason"] == "the serve process exited with code 5"
        return seen.get("restarts", 0) >= 3

    wait_for(third_restart, timeout=60, what="three restarts")
    assert backoffs == {1: 1, 2: 2, 3: 4}
    assert sup.poll() is None  # still supervising: only a first start is fatal
    sup.terminate()
    assert sup.wait(30) == 0


# -- workers restarted by BentoML ---------------------------------------------------------

@pytest.mark.parametrize("mode", ["ok", "late-respawn"])
def test_worker_restarts_counts_each_worker_bentoml_starts_again(project, mode):
    """late-respawn: a probe falls between the worker's death and its replacement (none
    runs then); the replacement is a restart all the same."""
    sup = supervise(project, mode)
    serve = ready(project)["serve_pid"]
    for restarted in (1, 2):
        worker = wait_for(lambda: report(project).get("worker_pids"), what="a worker")[0]
        os.kill(worker, signal.SIGKILL)
        seen = wait_for(lambda n=restarted: report(project).get("worker_restarts") == n
                        and report(project).get("worker_pids") and report(project),
                        what=f"worker restart {restarted}")
        assert worker not in seen["worker_pids"]
        assert seen["reason"] == "a worker was restarted by BentoML"
        assert seen["restarts"] == 0 and seen["serve_pid"] == serve  # the tree kept running
    time.sleep(2 * supervisor.HEALTH_EVERY)  # later probes see no new worker: no more counted
    assert report(project)["worker_restarts"] == 2
    sup.terminate()
    assert sup.wait(30) == 0
