"""The deploy journal (.mlstack/deployments.json) is never a single point of failure.

An unusable journal (cut short, garbage, the wrong shape, a folder, missing while the project
runs) is a named error: the file, what is wrong, `mlstack repair`; never the internal error's
exit 70. `down` stops every process of the project by owner marker whatever the journal
says. `repair` rebuilds the journal from what it observes and keeps the broken file. Saving
is atomic and keeps the previous good copy.

The fuzz test runs every verb that reads the journal against each corruption, with real
processes carrying the project's owner marker (stand-ins, no BentoML), so "down leaves
nothing" is checked against /proc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.cli.main import main
from mlstack.diagnostics.errors import JournalError
from mlstack.ops.local import journal_repair, lifecycle, procs, services
from mlstack.ops.local import state as state_module
from mlstack.ops.local.state import DeploymentState, RouterInfo, Version, VersionStatus
from mlstack.ops.paths import ProjectPaths
from tests import test_supervision
from tests.test_supervision import REPO, fake_start, wait_for

project = test_supervision.project  # a throwaway project; teardown asserts nothing of it runs

# A process of the project as a deploy leaves it: it starts a child that leaves its session
# (as BentoML's workers do), so only the owner marker finds the child.
SLEEPER = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
           "'import os, time; os.setsid(); time.sleep(600)']); time.sleep(600)")

# What a sound journal of a project serving v1 looks like (the corruptions start from it).
GOOD = json.dumps({
    "current": "v1", "previous": None,
    "versions": [{"version": "v1", "model_tag": "churn:abc", "port": 40001, "pid": 4242,
                  "status": "serving", "created_at": 1700000000.5,
                  "example_rows": [{"customer_id": 1057}], "metrics": {"auc": 0.9}}],
    "router": {"pid": 4243, "port": 40002, "limits": {"max_connections": 1024}},
    "routes": {"v1": 100},
    "history": [{"event": "deploy-succeeded", "at": 1700000001.0, "version": "v1"}],
    "journal": [], "deploy": {}, "cluster": {"address": ""},
}, indent=2, sort_keys=True).encode() + b"\n"
FOLDER = "a folder"  # deployments.json is a folder


def _with(**fields) -> bytes:
    return json.dumps({**json.loads(GOOD), **fields}).encode()


def _version(**fields) -> bytes:
    return _with(versions=[{**json.loads(GOOD)["versions"][0], **fields}])


CORRUPTIONS: dict[str, bytes | str] = {
    "cut after one byte": GOOD[:1],
    "cut at a quarter": GOOD[:len(GOOD) // 4],
    "cut at half": GOOD[:len(GOOD) // 2],
    "cut two bytes short": GOOD[:-2],
    "empty": b"",
    "blank lines": b"\n\n  \n",
    "garbage bytes": b"\x00\x13\x9c garbage \x7f\xfe{{",
    "nul bytes": b"\0" * 512,
    "invalid UTF-8 in a text": GOOD.replace(b"churn:abc", b"churn:\xff\xfe"),
    "a list": b"[]",
    "an empty object": b"{}",
    "null": b"null",
    "a number": b"42",
    "a text": b'"deployments"',
    "versions an object": _with(versions={"v1": {}}),
    "a version a text": _with(versions=["v1"]),
    "a version without its name": _with(versions=[{"port": 40001}]),
    "a version name with a slash": _version(version="../../etc"),
    "an unknown status": _version(status="running-ish"),
    "a pid as text": _version(pid="4242"),
    "a huge pid": _with(router={"pid": 10 ** 30, "port": 40002}),
    "a 5,000-digit port": b'{"router": {"port": 1' + b"0" * 5000 + b"}}",
    "a port as infinity": _version(port=1e400),
    "a negative port": _with(router={"port": -1}),
    "the router a list": _with(router=[4243, 40002]),
    "history a text": _with(history="deployed"),
    "weights as text": _with(routes={"v1": "all"}),
    "a journal entry without action": _with(journal=[{"version": "v2"}]),
    "the deploy's pid as text": _with(deploy={"version": "v2", "pid": "me"}),
    "an unknown field": _with(surprise=True),
    "nested too deep": b"[" * 100_000,
    "a folder": FOLDER,
}


def corrupt(paths: ProjectPaths, how: bytes | str) -> None:
    path = paths.deployments_file
    if path.is_dir():
        path.rmdir()
    if how == FOLDER:
        path.unlink(missing_ok=True)
        path.mkdir()
    else:
        path.write_bytes(how)


def start_processes(paths: ProjectPaths) -> int:
    """A version, a worker and a router of the project, each with a child in its own
    session; returns how many processes run (waits for the children)."""
    for role in ("version/v1", "worker/train", "router"):
        procs.start_background([sys.executable, "-c", SLEEPER], cwd=paths.project_dir,
                               env=None, log=paths.logs_dir / "sleepers.log",
                               owner=f"{paths.project_id}/{role}")
    return len(wait_for(lambda: len(procs.owned(paths.project_id)) == 6
                        and procs.owned(paths.project_id), what="6 processes of the project"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code != 70, f"{argv}: exit 70\n{out}{err}"
    assert "Traceback" not in out + err and "internal error" not in out + err, (argv, out, err)
    return code, out, err


@pytest.fixture
def spec(project, monkeypatch, capsys) -> str:
    """The project gets a real spec (deploy compiles it before it reads the journal)."""
    monkeypatch.delenv("MLSTACK_DEBUG", raising=False)
    assert main(["init", str(project.project_dir), "--force", "--format", "json"]) == 0
    capsys.readouterr()
    return str(project.spec)


# -- the fuzz -------------------------------------------------------------------------------

def test_every_verb_names_a_corrupt_journal_and_down_leaves_nothing(project, spec, capsys):
    path = project.deployments_file
    for name, how in CORRUPTIONS.items():
        corrupt(project, how)
        running = start_processes(project)
        for verb in ("status", "deploy", "rollback", "logs"):
            code, out, err = run_cli(capsys, verb, spec)
            assert code == 2, f"{name}: {verb} exit {code}\n{out}{err}"
            assert f"error: the deploy journal {path} is unusable: " in err, (name, verb, err)
            assert "hint: run: mlstack repair " in err, (name, verb, err)
        code, out, err = run_cli(capsys, "down", spec, "--format", "json")
        result = json.loads(out)
        assert code == 0 and result["still_alive"] == [], (name, out, err)
        assert procs.owned(project.project_id) == [], f"{name}: down left processes"
        assert result["processes"] == running
        assert sorted(result["stopped"]) == ["router", "v1", "worker train"], (name, result)
        assert "mlstack repair" in result["journal_problem"], (name, result)
        assert (path.is_dir() if how == FOLDER else path.read_bytes() == how), \
            f"{name}: down changed the broken journal"
        start_processes(project)
        code, out, err = run_cli(capsys, "repair", spec, "--format", "json")
        repaired = json.loads(out)
        assert code == 0 and repaired["repaired"], (name, out, err)
        kept = Path(repaired["broken_copy"])
        assert kept.parent == path.parent and kept.name.startswith("deployments.json.broken-")
        assert (kept.is_dir() if how == FOLDER else kept.read_bytes() == how), name
        rebuilt = DeploymentState.load(path)  # sound now
        assert [v.version for v in rebuilt.versions] == ["v1"], (name, rebuilt)
        code, out, err = run_cli(capsys, "down", spec)
        assert code == 0 and procs.owned(project.project_id) == [], (name, out, err)
        assert "warning" not in err


def test_down_on_a_journal_cut_in_half_exits_0_in_a_subprocess(project):
    """The real exit code and streams of `python -m mlstack down` (the issue's repro)."""
    state = DeploymentState.load(project.deployments_file)
    state.versions.append(Version("v1", status=VersionStatus.SERVING, pid=4242, port=40001))
    state.current = "v1"
    state.save()
    data = project.deployments_file.read_bytes()
    project.deployments_file.write_bytes(data[:len(data) // 2])
    running = start_processes(project)
    env = {k: v for k, v in os.environ.items() if k not in (procs.OWNER_ENV, "MLSTACK_DEBUG")}
    done = subprocess.run([sys.executable, "-m", "mlstack", "down", str(project.spec)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Stopped: router, v1, worker train ({running} processes)" in done.stdout
    assert f"warning: the deploy journal {project.deployments_file} is unusable: it is not " \
           "valid JSON" in done.stderr
    assert "mlstack repair" in done.stderr and "Traceback" not in done.stderr
    assert procs.owned(project.project_id) == []


# -- a missing journal ----------------------------------------------------------------------

def test_a_missing_journal_while_the_project_runs_is_named_and_down_stops_it(project, spec,
                                                                             capsys):
    running = start_processes(project)
    for verb in ("status", "deploy", "rollback"):
        code, _, err = run_cli(capsys, verb, spec)
        assert code == 2 and "has not been deployed" not in err, (verb, err)
        assert f"the deploy journal {project.deployments_file} is unusable: the file is " \
               f"missing while {running} processes of the project run" in err, (verb, err)
        assert "is taken by another program" not in err
    code, out, err = run_cli(capsys, "down", spec)
    assert code == 0 and f"({running} processes)" in out and "mlstack repair" in err
    assert procs.owned(project.project_id) == []
    # with nothing running, a missing journal is a project never deployed
    code, _, err = run_cli(capsys, "status", spec)
    assert code == 2 and "has not been deployed" in err


# -- repair ---------------------------------------------------------------------------------

def serving_v1(paths: ProjectPaths, monkeypatch) -> DeploymentState:
    """v1 runs under the real supervisor (a stand-in service, given its model's tag in its
    environment as deploy gives it) behind the router; its build is kept; saved more than
    once, so there is a previous good copy."""
    monkeypatch.setenv("MLSTACK_MODEL_TAG", "churn:first")
    state = DeploymentState.load(paths.deployments_file)
    v1 = Version("v1", model_tag="churn:first", example_rows=[{"customer_id": 1}])
    state.versions.append(v1)
    (paths.versions_dir / "v1").mkdir(parents=True)
    (paths.versions_dir / "v0").mkdir(parents=True)  # a build the journal never recorded
    fake_start(paths, v1, state=state)
    v1.status, state.current = VersionStatus.SERVING, "v1"
    services.ensure_router(paths, state, procs.free_port())
    services.route(paths, {"v1": 100}, state)
    return state


def test_repair_rebuilds_what_runs_and_keeps_the_broken_file(project, monkeypatch):
    state = serving_v1(project, monkeypatch)
    broken = b'{"versions": [{"version": "v1", "po'
    project.deployments_file.write_bytes(broken)
    with pytest.raises(JournalError) as caught:
        lifecycle.status(project.spec)
    hint = caught.value.hint
    assert f"the previous good copy is {project.deployments_file}.prev" in hint
    result = journal_repair.repair(project.spec)
    assert result.repaired and "not valid JSON" in result.problem
    assert Path(result.broken_copy).read_bytes() == broken
    assert result.base.startswith("the previous good copy")
    rebuilt = DeploymentState.load(project.deployments_file)
    v1 = rebuilt.get("v1")
    assert rebuilt.current == "v1" and v1.status == VersionStatus.SERVING
    assert v1.pid == state.get("v1").pid and v1.port == state.get("v1").port
    assert v1.example_rows == [{"customer_id": 1}]  # from the previous good copy
    assert rebuilt.router.pid == state.router.pid and rebuilt.router.port == state.router.port
    assert rebuilt.routes == {"v1": 100}
    assert rebuilt.get("v0").status == VersionStatus.STOPPED  # from the versions folder
    assert rebuilt.history[-1]["event"] == "journal-repaired"
    health = lifecycle.status(project.spec)  # what serves is known again, and healthy
    assert health.healthy, health.problems
    # a second break keeps both broken files
    project.deployments_file.write_bytes(b"[]")
    second = journal_repair.repair(project.spec)
    assert Path(second.broken_copy).name == "deployments.json.broken-2"
    assert Path(result.broken_copy).read_bytes() == broken


def test_repair_without_a_previous_copy_reads_the_model_from_the_running_supervisor(
        project, monkeypatch):
    state = serving_v1(project, monkeypatch)
    state_module.previous_copy(project.deployments_file).unlink()
    project.deployments_file.unlink()
    result = journal_repair.repair(project.spec)
    assert result.repaired and result.problem.startswith("the file is missing while")
    assert result.base.startswith("nothing")
    rebuilt = DeploymentState.load(project.deployments_file)
    v1 = rebuilt.get("v1")
    assert v1.model_tag == "churn:first" and v1.pid == state.get("v1").pid
    assert rebuilt.current == "v1" and rebuilt.router.port == state.router.port
    assert [v.version for v in rebuilt.versions] == ["v0", "v1"]
    assert rebuilt.previous == "v0"


def test_repair_leaves_a_sound_journal_alone(project, monkeypatch):
    serving_v1(project, monkeypatch)
    before = project.deployments_file.read_bytes()
    result = journal_repair.repair(project.spec)
    assert not result.repaired and project.deployments_file.read_bytes() == before
    assert not list(project.state_dir.glob("deployments.json.broken-*"))


# -- saving -----------------------------------------------------------------------------------

def test_save_is_atomic_and_keeps_the_previous_good_copy(tmp_path, monkeypatch):
    path = tmp_path / "deployments.json"
    state = DeploymentState(versions=[Version("v1")], current="v1")
    state.save(path)
    first = path.read_bytes()
    assert not state_module.previous_copy(path).exists()
    state.router = RouterInfo(pid=123, port=3000)
    state.save()
    assert state_module.previous_copy(path).read_bytes() == first
    second = path.read_bytes()
    # a crash before the journal's rename leaves the last complete file (written, fsynced
    # and renamed, never rewritten in place), and no temporary file behind
    synced, replace = [], os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))

    def crash(src, dst):
        if Path(dst) == path:
            raise OSError("disk full")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    state.current = "v2"
    with pytest.raises(OSError, match="disk full"):
        state.save()
    assert path.read_bytes() == second and synced
    assert state_module.previous_copy(path).read_bytes() == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deployments.json",
                                                          "deployments.json.prev"]
    monkeypatch.undo()
    # a broken file is never kept as the previous good copy
    path.write_bytes(b"{cut")
    state.save()
    assert state_module.previous_copy(path).read_bytes() == second
    assert DeploymentState.load(path).current == "v2"


def test_the_error_names_the_file_the_problem_and_the_repair(tmp_path):
    path = tmp_path / ".mlstack" / "deployments.json"
    path.parent.mkdir()
    path.write_bytes(_version(status="running-ish"))
    with pytest.raises(JournalError) as caught:
        DeploymentState.load(path, spec=tmp_path / "my spec.yaml")
    error = caught.value
    assert error.exit_code == 2 and error.code == "journal_error"
    assert error.message == (f"the deploy journal {path} is unusable: versions[0].status is "
                             "'running-ish', not one of starting, ready, serving, stopped, "
                             "failed, rolled_back")
    assert error.hint.startswith(f"run: mlstack repair '{tmp_path}/my spec.yaml'")
    assert "previous good copy" not in error.hint
