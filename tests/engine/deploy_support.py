"""Helpers of the deploy tests: run the real CLI, and find/stop what a deploy started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from mlstack.ops.local import procs
from mlstack.ops.paths import ProjectPaths

CHECKOUT = Path(__file__).resolve().parents[2]
# where a deploy would write beside its project: taken from the test's HOME, not the caller's
STATE_VARIABLES = ("MLSTACK_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "PREFECT_API_URL",
                   "BENTOML_HOME", "PREFECT_HOME")


def deploy_env(root: Path, **extra: str) -> dict:
    """The environment of a test's `mlstack` children: a HOME of its own under `root` (a
    deploy may write nothing there but its state folder), none of the caller's state
    variables, and this checkout's mlstack first on PYTHONPATH (a shared venv may have
    another one installed), plus `extra`."""
    env = dict(os.environ, HOME=str(root / "home"), PYTHONPATH=str(CHECKOUT), **extra)
    for name in STATE_VARIABLES:
        env.pop(name, None)
    return env


def run_mlstack(cwd: Path, *args: str, env: dict, check: bool = True, timeout: float = 600):
    """`python -m mlstack ARGS` in a subprocess; never a traceback, exit 0 when `check`."""
    proc = subprocess.run([sys.executable, "-m", "mlstack", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlstack {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# What a test may not change in a blueprint it deploys, except through adjust_slos (with
# its reason): the SLOs and the features' TTLs (what `mlstack init` ships is what is proven).
PROTECTED = ("slos:", "latency:", "p50_ms", "p95_ms", "p99_ms", "throughput_rps",
             "availability", "error_rate", "feature_freshness", "quality:", "ttl:", "target:",
             "kind: local", "kind: aws", "kind: kubernetes")


class SloAdjusted(UserWarning):
    """A test deployed a blueprint with an SLO changed; pytest's warnings summary prints each,
    with the test and its reason."""


def change_spec(spec: Path, replacements: dict[str, str]) -> None:
    """Rewrite parts of a test's copy of a spec that are not SLOs, TTLs or the target (a
    model parameter, a rollout's steps, user code); each part must be there."""
    for old, new in replacements.items():
        # an addition after protected text (a compute block under target:) keeps it as is
        short, long = sorted((old, new), key=len)
        changed = long[len(short):] if long.startswith(short) else old + new
        touched = [word for word in PROTECTED if word in changed]
        assert not touched, (f"change_spec may not touch {touched}: adjust_slos (with a "
                             f"reason) or local_target is the place for that")
    _replace(spec, replacements)


def adjust_slos(spec: Path, replacements: dict[str, str], reason: str) -> None:
    """The one place a test may change a blueprint's SLOs, each part inside its `slos:` block,
    with the reason the report prints (pytest's warnings summary)."""
    import warnings

    assert reason.strip(), "an SLO is adjusted only with a reason"
    text = spec.read_text()
    start = text.index("\nslos:\n")
    end = next((i for i in range(start + 7, len(text)) if text[i - 1] == "\n"
                and text[i] not in " #\n"), len(text))
    for old in replacements:
        assert old in text[start:end], f"{old!r} is not in the slos: block"
    _replace(spec, replacements)
    changes = ", ".join(f"{old} -> {new}" for old, new in replacements.items())
    warnings.warn(SloAdjusted(f"{spec.parent.name}: {changes}: {reason}"), stacklevel=2)


def local_target(spec: Path, target: str) -> None:
    """Replace a cluster blueprint's `target:` block (the last top-level block) with a local
    one, and nothing else: the blueprint's model, data, SLOs and rollout stay as shipped."""
    text = spec.read_text()
    start = text.index("\ntarget:\n") + 1
    assert all(line.startswith((" ", "#")) or not line
               for line in text[start:].splitlines()[1:]), "target: is not the last block"
    spec.write_text(text[:start] + target.strip("\n") + "\n")


def _replace(spec: Path, replacements: dict[str, str]) -> None:
    text = spec.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    spec.write_text(text)


def deploy_state(project: Path) -> dict:
    path = project / ".mlstack" / "deployments.json"
    return json.loads(path.read_text()) if path.exists() else {"versions": [], "router": {}}


def started_pids(project: Path) -> list[int]:
    """Every PID the project's deploys recorded: service versions and the router."""
    data = deploy_state(project)
    return [v["pid"] for v in data["versions"] if v.get("pid")] + (
        [data["router"]["pid"]] if data["router"].get("pid") else [])


def project_processes(project: Path) -> list[procs.OwnedProcess]:
    """Every process of the project's deploys, found by the owner marker in its environment
    (not by name, not only by recorded PID): versions' trees, router, workers."""
    return procs.owned(ProjectPaths.for_spec(project / "mlstack.yaml").project_id)


def stop_everything(project: Path, env: dict) -> None:
    """`mlstack down`, then each recorded PID directly, then anything still carrying the
    project's marker; assert none is left alive."""
    pids = started_pids(project)
    run_mlstack(project, "down", env=env, check=False, timeout=120)
    for pid in pids:
        procs.stop_process(pid)
    procs.stop_owned(ProjectPaths.for_spec(project / "mlstack.yaml").project_id)
    assert [pid for pid in pids if procs.is_alive(pid)] == []
    assert project_processes(project) == []


def local_compute(workers: int, memory_mib: int, train_engine: str = "ray_task"):
    """A target.compute of the local target, resolved (the cluster tests start it)."""
    from mlstack.frontend.ir import nodes as ir

    return ir.ComputeNode(engine="ray", address="local", workers=workers,
                          worker=ir.ResourcesNode(cpu=1, memory_mib=memory_mib, gpu=0,
                                                  gpu_type=None),
                          train_engine=train_engine, steps=(), at="/target/compute")


@contextmanager
def scratch_project(folder: Path):
    """(paths, state) of a throwaway project in `folder`; afterwards its Ray cluster and
    every process carrying its marker are stopped, and none may be left."""
    from mlstack.ops.local import ray_cluster
    from mlstack.ops.local.state import DeploymentState

    spec = folder / "mlstack.yaml"
    spec.write_text("kind: System\n")
    paths = ProjectPaths.for_spec(spec)
    state = DeploymentState.load(paths.deployments_file)
    try:
        yield paths, state
    finally:
        ray_cluster.stop(paths, state)
        left = procs.stop_owned(paths.project_id, timeout=5.0)
        assert left == [], f"processes left: {left}"
