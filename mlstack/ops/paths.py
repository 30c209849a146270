"""Where a deployed project keeps its build, its state and the libraries' homes.

- <project>/build/              the compiled tree (the one writer writes it)
- <project>/.mlstack/           deploy state: deployments.json, logs/, pids, feast state
- $MLSTACK_HOME/projects/<id>/  BentoML and Prefect homes, kept outside the project folder
  (MLSTACK_HOME defaults to $XDG_STATE_HOME/mlstack, i.e. ~/.local/state/mlstack)
Nothing else under the user's home is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlstack.codegen.contract import ENV_PROJECT_DIR, ENV_STATE_DIR, TELEMETRY_ENV
from mlstack.diagnostics.errors import UsageError

# Library noise kept out of the services' logs: BentoML 1.4's request handling reads a
# pydantic model's fields in a way pydantic 2.11 deprecates, one warning per request (a third
# of a service log's lines). Python's -W syntax: action:message prefix:category.
QUIET_WARNINGS = ("ignore:Accessing the 'model_fields' attribute:DeprecationWarning",)


def mlstack_home() -> Path:
    if os.environ.get("MLSTACK_HOME"):
        return Path(os.environ["MLSTACK_HOME"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mlstack"


@dataclass(frozen=True)
class ProjectPaths:
    spec: Path
    project_dir: Path
    build_dir: Path
    state_dir: Path
    home_dir: Path

    @classmethod
    def for_spec(cls, spec: Path, build_dir: Path | None = None) -> ProjectPaths:
        spec = Path(spec).resolve()
        project = spec.parent
        digest = hashlib.sha256(str(project).encode()).hexdigest()[:12]
        return cls(spec=spec, project_dir=project,
                   build_dir=(build_dir or project / "build").resolve(),
                   state_dir=project / ".mlstack",
                   home_dir=mlstack_home() / "projects" / f"{project.name}-{digest}")

    @property
    def project_id(self) -> str:
        """<project folder name>-<hash of its path>: the prefix of the owner marker every
        process of this project's deploys carries (mlstack.ops.local.procs)."""
        return self.home_dir.name

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def runtime_state_dir(self) -> Path:
        """MLSTACK_STATE_DIR of the generated code: feast registry and online store."""
        return self.state_dir / "runtime"

    @property
    def deployments_file(self) -> Path:
        return self.state_dir / "deployments.json"

    @property
    def versions_dir(self) -> Path:
        return self.state_dir / "versions"

    def environment(self, code_dir: Path | None = None, **extra: str) -> dict[str, str]:
        """The environment every child process of a deploy runs with; `code_dir` is the
        generated tree it imports (default: the build folder)."""
        for folder in (self.home_dir / "bentoml", self.home_dir / "prefect",
                       self.runtime_state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(TELEMETRY_ENV)
        python_path = [str(code_dir or self.build_dir)] + (
            [env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update({
            ENV_PROJECT_DIR: str(self.project_dir),
            ENV_STATE_DIR: str(self.runtime_state_dir),
            "BENTOML_HOME": str(self.home_dir / "bentoml"),
            "PREFECT_HOME": str(self.home_dir / "prefect"),
            # caches the libraries keep under ~/.cache (ONNX Runtime's device id file)
            "XDG_CACHE_HOME": str(self.home_dir / "cache"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "WARNING"),
            "PYTHONPATH": os.pathsep.join(python_path),
            "PYTHONUNBUFFERED": "1",
            # the last -W entry wins: ours after the user's, which are kept
            "PYTHONWARNINGS": ",".join(filter(None, [env.get("PYTHONWARNINGS", ""),
                                                     *QUIET_WARNINGS])),
        })
        env.update(extra)
        return env


@contextmanager
def project_lock(paths: ProjectPaths):
    """One mlstack command at a time works on a project: compile, deploy, down, rollback."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.state_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError("another mlstack command is working on this project",
                             "wait for it to finish") from None
        yield
