"""The isolated, cached environment the generated infra app (cdktn) runs in, and synth.

cdktn pins typeguard 2.x and cannot share a venv with the runtime layers, so the app's own
requirements.txt is installed into a venv under the tool's cache, keyed by a hash of the
requirements and the Python version, and reused while they do not change. Creation is
guarded by a file lock so two processes never build the same environment at once.

Cache folder: $MLSTACK_CACHE_DIR, else $MLSTACK_HOME/cache, else $XDG_CACHE_HOME/mlstack
(~/.cache/mlstack). Library code: progress goes through a callback, nothing is printed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlstack.diagnostics.errors import MlstackError

Progress = Callable[[str], None]
READY = ".mlstack-ready"
SYNTH_TIMEOUT_SECONDS = 600
INSTALL_TIMEOUT_SECONDS = 1800


class InfraEnvError(MlstackError):
    """The infra environment could not be created, or synth failed (exit 1)."""

    exit_code = 1
    code = "infra_env_failed"


def cache_dir() -> Path:
    if os.environ.get("MLSTACK_CACHE_DIR"):
        return Path(os.environ["MLSTACK_CACHE_DIR"]).expanduser()
    if os.environ.get("MLSTACK_HOME"):
        return Path(os.environ["MLSTACK_HOME"]).expanduser() / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlstack"


def requirement_lines(text: str) -> tuple[str, ...]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(sorted(line for line in lines if line))


def env_key(requirements_text: str, python: str = sys.executable) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    material = "\n".join(requirement_lines(requirements_text) + (version,))
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InfraEnv:
    path: Path
    created: bool  # False when an existing environment was reused
    seconds: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def environment(self) -> dict[str, str]:
        """Variables the app runs with: jsii quiet and cached, telemetry off."""
        env = dict(os.environ)
        env.update({
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": _node_major() or "20",
            "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
            "JSII_RUNTIME_PACKAGE_CACHE_ROOT": str(cache_dir() / "jsii"),
            "CHECKPOINT_DISABLE": "1",
            "DO_NOT_TRACK": "1",
            "VIRTUAL_ENV": str(self.path),
            "PATH": str(self.path / "bin") + os.pathsep + env.get("PATH", ""),
        })
        env.pop("PYTHONPATH", None)
        env.pop("CDKTF_OUTDIR", None)
        return env


def _node_major() -> str | None:
    node = shutil.which("node")
    if not node:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    return out.lstrip("v").split(".")[0] or None


def ensure_env(requirements: Path, *, progress: Progress | None = None,
               python: str = sys.executable) -> InfraEnv:
    """The environment for `requirements` (a requirements.txt), created on first use."""
    say = progress or (lambda _message: None)
    started = time.monotonic()
    text = Path(requirements).read_text(encoding="utf-8")
    root = cache_dir() / "infra-envs"
    root.mkdir(parents=True, exist_ok=True)
    path = root / env_key(text, python)
    with open(root / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / READY).is_file():
            return InfraEnv(path, created=False, seconds=time.monotonic() - started)
        say(f"creating the infra environment in {path} (first use; about a minute)")
        shutil.rmtree(path, ignore_errors=True)
        _run([python, "-m", "venv", str(path)], "create the virtual environment")
        lines = requirement_lines(text)
        say(f"installing {len(lines)} requirements: {', '.join(lines)}")
        _run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", "--no-input", "-r", str(Path(requirements).resolve())],
             "install the infra requirements", timeout=INSTALL_TIMEOUT_SECONDS)
        (path / READY).write_text("\n".join(lines) + "\n", encoding="utf-8")
        seconds = time.monotonic() - started
        say(f"infra environment ready in {seconds:.0f} s")
        return InfraEnv(path, created=True, seconds=seconds)


def _run(cmd: list[str], what: str, timeout: int = INSTALL_TIMEOUT_SECONDS, **kwargs) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise InfraEnvError(f"could not {what}: timed out after {timeout} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-20:])
        raise InfraEnvError(f"could not {what} (exit {done.returncode}):\n{tail}")
    return done.stdout


@dataclass(frozen=True)
class SynthResult:
    stack: str
    path: Path  # infra/cdktf.out/stacks/<stack>/cdk.tf.json
    env: InfraEnv
    seconds: float


def synth(out_dir: Path, *, progress: Progress | None = None) -> SynthResult:
    """Run the generated infra app of the compiled tree `out_dir` and return its stack JSON."""
    say = progress or (lambda _message: None)
    infra = Path(out_dir) / "infra"
    if not (infra / "main.py").is_file():
        raise InfraEnvError(f"{infra} has no infra app: the target is local, or the tree "
                            "was not compiled", hint="compile a spec whose target is "
                            "kubernetes or aws")
    if shutil.which("node") is None:
        raise InfraEnvError("cdktn needs Node.js on PATH to synthesize",
                            hint="install Node.js 20 or newer")
    env = ensure_env(infra / "requirements.txt", progress=progress)
    started = time.monotonic()
    out = infra / "cdktf.out"
    shutil.rmtree(out, ignore_errors=True)
    say("synthesizing Terraform JSON")
    _run([str(env.python), "main.py"], "synthesize the infra app", timeout=SYNTH_TIMEOUT_SECONDS,
         cwd=infra, env=env.environment())
    stacks = sorted((out / "stacks").glob("*/cdk.tf.json"))
    if len(stacks) != 1:
        raise InfraEnvError(f"expected one synthesized stack in {out}, found {len(stacks)}")
    return SynthResult(stack=stacks[0].parent.name, path=stacks[0], env=env,
                       seconds=time.monotonic() - started)
