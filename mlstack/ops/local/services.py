"""The processes of a local deployment: one `bentoml serve` per version, and the router."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlstack.codegen.contract import ENV_MODEL_TAG, ENV_PROGRESS_FILE
from mlstack.ops.local import procs
from mlstack.ops.local.router import write_table
from mlstack.ops.local.state import DeploymentState, RouterInfo, Version
from mlstack.ops.paths import ProjectPaths

READY_TIMEOUT = 180.0


def service_target(code_dir: Path) -> str:
    """'service.service:ChurnService', as the generated bentofile names it."""
    bentofile = yaml.safe_load((code_dir / "service" / "bentofile.yaml").read_text())
    return bentofile["service"]


def start_version(paths: ProjectPaths, version: Version, code_dir: Path) -> None:
    """Start the version's service on a free loopback port and wait until it is ready."""
    port = procs.free_port()
    log = paths.logs_dir / f"service-{version.version}.log"
    env = paths.environment(code_dir, **{ENV_MODEL_TAG: version.model_tag or ""})
    argv = [sys.executable, "-m", "bentoml", "serve", service_target(code_dir),
            "--host", "127.0.0.1", "--port", str(port)]
    version.port = port
    version.pid = procs.start_background(argv, cwd=code_dir, env=env, log=log)
    procs.wait_ready(f"http://127.0.0.1:{port}/readyz", version.pid, READY_TIMEOUT, log)
    version.status = "ready"


def version_url(version: Version) -> str:
    return f"http://127.0.0.1:{version.port}"


def router_config(paths: ProjectPaths) -> Path:
    return paths.state_dir / "router.json"


def ensure_router(paths: ProjectPaths, state: DeploymentState, port: int) -> None:
    """Start the router on `port` unless it already runs there."""
    r = state.router
    if r.pid and procs.is_alive(r.pid) and r.port == port:
        return
    if r.pid:
        procs.stop_process(r.pid)
    config = router_config(paths)
    if not config.exists():
        write_table(config, [])
    log = paths.logs_dir / "router.log"
    argv = [sys.executable, "-m", "mlstack.ops.local.router", "--port", str(port),
            "--config", str(config)]
    env = paths.environment()
    pid = procs.start_background(argv, cwd=paths.state_dir, env=env, log=log)
    state.router = RouterInfo(pid=pid, port=port)
    try:
        procs.wait_ready(f"http://127.0.0.1:{port}/-/router", pid, 20.0, log)
    except RuntimeError as exc:
        procs.stop_process(pid)
        state.router = RouterInfo()
        raise RuntimeError(f"the router could not listen on port {port}: {exc}") from None


def route(paths: ProjectPaths, weights: dict[str, int], state: DeploymentState) -> None:
    """Send traffic to versions by weight (percent); the router applies it on its next request."""
    backends = []
    for name, weight in sorted(weights.items()):
        version = state.get(name)
        if version is not None and weight > 0:
            backends.append({"version": name, "url": version_url(version), "weight": weight})
    write_table(router_config(paths), backends)
    time.sleep(0.05)  # mtime granularity: let the next request see the new table


def routed(paths: ProjectPaths) -> dict[str, int]:
    config = router_config(paths)
    if not config.exists():
        return {}
    return {b["version"]: b["weight"] for b in json.loads(config.read_text())["backends"]}


@dataclass(frozen=True)
class WorkerOutcome:
    """What a worker job returned: its result, or the error it failed with."""

    ok: bool
    result: dict = field(default_factory=dict)
    error_type: str = ""
    error: str = ""

    @classmethod
    def from_json(cls, data: dict) -> WorkerOutcome:
        return cls(ok=bool(data.get("ok")), result=data.get("result") or {},
                   error_type=data.get("error_type", ""), error=data.get("error", ""))


def run_worker(paths: ProjectPaths, code_dir: Path, job: str, package: str, *,
               progress_file: Path | None = None, on_progress=None,
               **options) -> WorkerOutcome:
    """Run `python -m mlstack.ops.local.worker JOB` in the isolated environment and return its
    result; `on_progress(line)` gets each line the flow appends to the progress file."""
    result_file = paths.state_dir / f"worker-{job}.json"
    result_file.unlink(missing_ok=True)
    extra = {ENV_PROGRESS_FILE: str(progress_file)} if progress_file else {}
    if progress_file:
        progress_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "mlstack.ops.local.worker", job, "--package", package,
            "--result", str(result_file)]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    log = paths.logs_dir / f"worker-{job}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    seen = 0
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=code_dir, env=paths.environment(code_dir, **extra),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while True:
            done = proc.poll() is not None
            if progress_file and on_progress and progress_file.exists():
                lines = progress_file.read_text().splitlines()
                for line in lines[seen:]:
                    on_progress(json.loads(line))
                seen = len(lines)
            if done:
                break
            time.sleep(0.2)
    if not result_file.exists():
        tail = procs.log_tail(log)
        return WorkerOutcome(False, error_type="WorkerCrashed",
                             error=f"the worker exited with code {proc.returncode}{tail}")
    return WorkerOutcome.from_json(json.loads(result_file.read_text()))
