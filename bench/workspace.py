"""A churn project deployed with `mlstack deploy` in a private MLSTACK_HOME: the generated
tree, its Feast state (registry, materialized SQLite online store) and a model trained by the
generated flow in the project's BentoML store. Sections 3-5 measure against it; section 6
times the deploys that make it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import MLSTACK, child_env, free_port, timed_run


def service_target(code_dir: Path) -> str:
    """'service.service:ChurnService', as the generated bentofile names it."""
    return yaml.safe_load((code_dir / "service" / "bentofile.yaml").read_text())["service"]


@dataclass
class Deployment:
    root: Path  # holds home/ and churn/
    project: Path
    home: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        return child_env(MLSTACK_HOME=str(self.home))

    @property
    def state(self) -> dict:
        path = self.project / ".mlstack" / "deployments.json"
        return json.loads(path.read_text()) if path.exists() else {"versions": [], "router": {}}

    def pids(self) -> list[int]:
        state = self.state
        found = [v["pid"] for v in state["versions"] if v.get("pid")]
        if state.get("router", {}).get("pid"):
            found.append(state["router"]["pid"])
        return found

    def deploy(self, *args: str) -> tuple[float, dict]:
        """`mlstack deploy --format json`: (seconds, its report); on failure the report is
        {"failed": <the error line>}."""
        proc_wall, out, err, code = _run(
            [MLSTACK, "deploy", "--port", str(self.port), "--format", "json", *args], self.env,
            self.project)
        if code != 0:
            lines = [x for x in err.splitlines() if x.startswith("error:")]
            return proc_wall, {"failed": lines[-1] if lines else err[-500:], "exit": code}
        return proc_wall, json.loads(out)

    def down(self, procs) -> None:
        """`mlstack down`, then every recorded PID directly (by its process group)."""
        pids = self.pids()
        timed_run([MLSTACK, "down"], env=self.env, cwd=self.project, timeout=180, check=False)
        for pid in pids:
            procs.stop(pid)

    # what sections 3-5 need from a finished deployment
    @property
    def build_dir(self) -> Path:
        return self.project / "build"

    @property
    def model_tag(self) -> str:
        state = self.state
        return state["versions"][-1]["model_tag"]

    def runtime_env(self, code_dir: Path | None = None, **extra: str) -> dict[str, str]:
        """The environment deploy gives the generated code (mlstack.ops.paths)."""
        import os

        from mlstack.ops.paths import ProjectPaths

        saved = os.environ.get("MLSTACK_HOME")
        os.environ["MLSTACK_HOME"] = str(self.home)
        try:
            paths = ProjectPaths.for_spec(self.project / "mlstack.yaml")
            env = paths.environment(code_dir or self.build_dir, **extra)
        finally:
            if saved is None:
                os.environ.pop("MLSTACK_HOME", None)
            else:
                os.environ["MLSTACK_HOME"] = saved
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env


def _run(argv, env, cwd) -> tuple[float, str, str, int]:
    import subprocess
    import time

    began = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    return time.perf_counter() - began, proc.stdout, proc.stderr, proc.returncode


def new_deployment(root: Path) -> Deployment:
    """A fresh MLSTACK_HOME and a fresh churn project from the bundled blueprint."""
    root.mkdir(parents=True, exist_ok=True)
    dep = Deployment(root=root, project=root / "churn", home=root / "home", port=free_port())
    timed_run([MLSTACK, "init", str(dep.project), "--blueprint", "churn"], env=dep.env,
              cwd=root)
    redate(dep.project)
    return dep


def redate(project: Path) -> None:
    """The blueprint's data is a fixed 2026 sample: moved to the present (one offset for every
    timestamp), else every value is older than its view's TTL and the service answers null."""
    from mlstack.runtime.sources import redate_files

    data = project / "data"
    redate_files(sorted(data.glob("*.parquet")), anchor=[data / "customers.parquet"])
