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
import time
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
            # once each, so an environment made from one of these is the same again
            "PYTHONWARNINGS": ",".join(dict.fromkeys(filter(None, [
                *env.get("PYTHONWARNINGS", "").split(","), *QUIET_WARNINGS]))),
        })
        env.update(extra)
        return env


KEEPER_WAIT = 120.0  # seconds a command waits for the keeper's repair (a version's restart)


@contextmanager
def project_lock(paths: ProjectPaths, holder: str = "command", keeper_wait: float = KEEPER_WAIT):
    """One mlstack command at a time works on a project: compile, deploy, down, rollback.

    The holder writes who it is into the lock file ("<pid> <holder>"). A command that finds
    the lock held by the keeper (mlstack.ops.local.keeper, `holder="keeper"`: a brief repair
    between commands) waits for it up to `keeper_wait` seconds instead of failing; a lock
    held by another command is a UsageError at once."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + keeper_wait
    # not "w": opening must not wipe the holder's name before the lock is ours
    with open(paths.state_dir / ".lock", "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if lock_holder(paths) != "keeper" or time.monotonic() >= deadline:
                    raise UsageError("another mlstack command is working on this project"
                                     + _held_by(paths), "wait for it to finish (mlstack status "
                                     "shows a deploy's or a retrain's progress)") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {holder}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()


RETRAIN_HOLDER = "retrain"  # the lock file's name for a scheduled retrain
# what a holder's name in the lock file is, in the refusal another command gets
HOLDERS = {"keeper": "the keeper's repair", "retrain": "a scheduled retrain",
           "command": "a command"}


def _held_by(paths: ProjectPaths) -> str:
    """' (a scheduled retrain, pid 4242)': who the lock file says holds the lock; '' when it
    names nobody alive."""
    held = lock_owner(paths)
    return "" if held is None else f" ({HOLDERS.get(held[1], held[1])}, pid {held[0]})"


def lock_owner(paths: ProjectPaths) -> tuple[int, str] | None:
    """(pid, holder) of the project lock as its file says ("command", "keeper", "retrain");
    None when the file names nobody, or a process that is gone."""
    try:
        text = (paths.state_dir / ".lock").read_text().split()
    except OSError:
        return None
    if len(text) != 2 or not text[0].isdigit():
        return None
    try:
        os.kill(int(text[0]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return int(text[0]), text[1]


def lock_holder(paths: ProjectPaths) -> str | None:
    """Who holds the project lock as it says ("command", "keeper", "retrain"); None when the
    file names nobody, or a process that is gone."""
    held = lock_owner(paths)
    return None if held is None else held[1]
