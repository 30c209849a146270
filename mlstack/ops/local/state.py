"""Deployment state of a local project: versions, which one serves, the router, history.

Kept in <project>/.mlstack/deployments.json, written atomically. Timestamps live here (state,
not generated output). Every process a deploy starts is recorded with its PID.

The file is also a journal, written before each action: `begin(action)` records the intent
(and saves), `end(entry)` its result (and saves); the router's weights are recorded in
`routes` before its table changes; `deploy` names the deploy in progress. A deploy killed at
any point leaves a state that says what it was doing, and the next deploy, rollback or down
reconciles it (mlstack.ops.local.reconcile).

The journal never blocks recovery. It is written atomically (a temporary file, fsync, rename)
and the copy it replaces is kept as deployments.json.prev while that copy is sound. Loading
checks the file's shape field by field: a file cut short, overwritten, of the wrong shape or
not a file raises JournalError naming the file, what is wrong, `mlstack repair` and the
previous good copy; so does a missing file while processes of the project run.
`mlstack down` needs no journal (it stops the project's processes by owner marker), and
`mlstack repair` (mlstack.ops.local.journal_repair) rebuilds it from what it observes.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import tempfile
import time
import types
import typing
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from enum import Enum, StrEnum
from pathlib import Path

from mlstack.diagnostics.errors import JournalError
from mlstack.ops.local import procs
from mlstack.ops.paths import ProjectPaths

PREVIOUS_SUFFIX = ".prev"  # deployments.json.prev: the copy the last save replaced
PID_MAX = 1 << 22  # Linux's largest pid_max
# whole numbers the journal holds that name a process or a port: anything else is damage
NUMBER_RANGES = {"pid": (1, PID_MAX), "port": (1, 65535)}
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a file name and a marker part


class VersionStatus(StrEnum):
    STARTING = "starting"
    READY = "ready"  # started and ready, not (yet) taking traffic as the current version
    SERVING = "serving"
    STOPPED = "stopped"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


@dataclass
class Version:
    version: str
    model_tag: str | None = None
    spec_hash: str = ""
    training_key: str = ""  # the source data's fingerprint the model was trained on
    port: int | None = None
    pid: int | None = None
    status: VersionStatus = VersionStatus.STARTING
    created_at: float = 0.0
    tree_hash: str = ""  # hash of the generated tree this version runs (its manifest's files)
    example_rows: list = field(default_factory=list)  # request rows known to have features
    metrics: dict = field(default_factory=dict)
    slo_report: dict = field(default_factory=dict)
    failure: str | None = None


@dataclass
class RouterInfo:
    pid: int | None = None
    port: int | None = None
    limits: dict = field(default_factory=dict)  # admission control (router.py LIMITS)


@dataclass
class ClusterInfo:
    """The Ray cluster the project's flows run on (target.compute): one this machine runs
    under a supervisor (address local), or one joined (ray://host:port)."""

    address: str = ""  # what the flows join: 127.0.0.1:<port> (started here) or ray://...
    pid: int | None = None  # the supervisor of the cluster started here (none when joined)
    port: int | None = None
    shape: dict = field(default_factory=dict)  # workers, cpu, memory_mib it was started with
    temp_dir: str = ""  # Ray's session folders (logs of every Ray process)


@dataclass
class DeploymentState:
    versions: list[Version] = field(default_factory=list)
    current: str | None = None
    previous: str | None = None
    router: RouterInfo = field(default_factory=RouterInfo)
    history: list[dict] = field(default_factory=list)
    routes: dict[str, int] = field(default_factory=dict)  # the router's weights, as recorded
    journal: list[dict] = field(default_factory=list)  # actions begun and not finished
    deploy: dict = field(default_factory=dict)  # the deploy in progress: version, pid, stage
    cluster: ClusterInfo = field(default_factory=ClusterInfo)
    # the router's table beside the weights, as recorded: a shadow {version, tolerance} and
    # a sticky split {experiment, key} (services.route)
    traffic: dict = field(default_factory=dict)
    # the A/B experiment running or last ended (ops.local.experiment)
    experiment: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, spec: Path | None = None) -> DeploymentState:
        """The state in `path` (an empty one when there is no file and nothing of the
        project runs). JournalError when the file cannot be read as a journal, or is missing
        while the project's processes run; `spec` goes into the repair command it names."""
        absent = not path.exists() and not path.is_symlink()
        try:
            state = cls() if absent else parse_journal(_read(path))
        except ValueError as exc:
            raise JournalError(path, str(exc), _repair_hint(path, spec)) from None
        running = _project_processes(path) if state.records_nothing() else 0
        if running:  # a deploy journals what it starts before it starts it
            raise JournalError(path, f"{'the file is missing' if absent else 'it records nothing'}"
                                     f" while {running} processes of the project run",
                               _repair_hint(path, spec))
        state.path = path
        return state

    def save(self, path: Path | None = None) -> None:
        """Write atomically (temporary file, fsync, rename); the sound copy it replaces is
        kept as <file>.prev."""
        path = path or getattr(self, "path", None)
        if path is None:
            raise ValueError("this state was not loaded from a file: name one")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()
        old = _read_quietly(path)
        if old != data:
            if old is not None and _sound(old):
                write_atomically(previous_copy(path), old)
            write_atomically(path, data)
        self.path = path

    # -- the journal ----------------------------------------------------------------------
    def begin(self, action: str, **details) -> dict:
        """Record that `action` is about to happen (saved before it does)."""
        entry = {"action": action, "at": round(time.time(), 3), **details}
        self.journal.append(entry)
        self.save()
        return entry

    def end(self, entry: dict, **result) -> None:
        """Record how a begun action ended (saved): out of the journal, into the history."""
        if entry in self.journal:
            self.journal.remove(entry)
        details = {k: v for k, v in entry.items() if k not in ("action", "at")}
        self.record(entry["action"], **details, **result)
        self.save()

    @contextmanager
    def action(self, action: str, **details):
        """begin() ... end(ok=True), or end(ok=False, error=...) when the block raises."""
        entry = self.begin(action, **details)
        try:
            yield entry
        except BaseException as exc:
            self.end(entry, ok=False, error=str(exc) or type(exc).__name__)
            raise
        self.end(entry, ok=True)

    def records_nothing(self) -> bool:
        """No version, router, cluster, deploy or action is recorded: nothing was started."""
        return not (self.versions or self.router.pid or self.cluster.address or self.journal
                    or self.deploy)

    def get(self, version: str | None) -> Version | None:
        return next((v for v in self.versions if v.version == version), None)

    def next_version(self) -> str:
        numbers = [int(v.version[1:]) for v in self.versions if v.version[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1}"

    def record(self, event: str, **details) -> None:
        self.history.append({"event": event, "at": round(time.time(), 3), **details})
        self.history = self.history[-200:]


# -- reading and writing the file ------------------------------------------------------------

def previous_copy(path: Path) -> Path:
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def write_atomically(path: Path, data: bytes) -> None:
    """A temporary file beside `path`, fsynced, renamed over it, the folder fsynced: a crash
    leaves the old file or the new one, never a part of either."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise ValueError("it is a folder, not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"it cannot be read ({exc.strerror or exc})") from None


def _read_quietly(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def _sound(data: bytes) -> bool:
    try:
        parse_journal(data)
    except ValueError:
        return False
    return True


def parse_journal(data: bytes) -> DeploymentState:
    """The state a journal file holds; ValueError saying what is wrong with it (in words a
    user can act on), whatever the bytes are."""
    if not data.strip():
        raise ValueError("the file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}): cut short or overwritten") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
        raise ValueError(f"it is not a journal ({str(exc)[:80] or type(exc).__name__})") \
            from None
    state = _build(DeploymentState, raw, "its content")
    for i, v in enumerate(state.versions):
        if not VERSION_NAME.fullmatch(v.version):
            raise ValueError(f"versions[{i}].version {v.version[:40]!r} is not a version name")
    for i, entry in enumerate(state.journal):
        if not isinstance(entry.get("action"), str):
            raise ValueError(f"journal[{i}] names no action")
    _check_number(state.deploy.get("pid"), "deploy.pid", "pid")
    if not isinstance(state.deploy.get("version"), str | None):
        raise ValueError("deploy.version is not a text")
    return state


def _build(cls, raw, where: str):
    """An instance of the dataclass `cls` from JSON, each field checked against its type."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is {_kind(raw)}, not an object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where} has fields this mlstack does not know: "
                         f"{', '.join(map(repr, unknown))[:120]}")
    hints = _type_hints(cls)
    values = {}
    for name in known:
        if name in raw:
            values[name] = _value(raw[name], hints[name], _at(where, name), name)
    missing = [n for n, f in known.items() if n not in raw
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    return cls(**values)


@functools.cache
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _value(value, hint, where: str, name: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(value, inner, where, name)
    if is_dataclass(hint):
        return _build(hint, value, where)
    if hint is list or origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} is {_kind(value)}, not a list")
        return [_value(item, args[0], f"{where}[{i}]", name) for i, item in enumerate(value)] \
            if args else value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} is {_kind(value)}, not an object")
        return {k: _value(item, args[1], _at(where, k), k) for k, item in value.items()} \
            if args else value
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except (ValueError, TypeError):
            raise ValueError(f"{where} is {str(value)[:40]!r}, not one of "
                             f"{', '.join(m.value for m in hint)}") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} is {_kind(value)}, not a number")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} is {_kind(value)}, not a whole number")
        _check_number(value, where, name)
        return value
    if hint is str and not isinstance(value, str):
        raise ValueError(f"{where} is {_kind(value)}, not a text")
    return value


def _check_number(value, where: str, name: str) -> None:
    if value is None or name not in NUMBER_RANGES:
        return
    low, high = NUMBER_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where} is {str(value)[:30]}, not a {name} ({low} to {high})")


def _at(where: str, name: str) -> str:
    return name if where == "its content" else f"{where}.{name}"


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a text"}
    return names.get(
        type(value), f"the number {str(value)[:30]}" if isinstance(value, int | float)
        else type(value).__name__)


def _project_processes(path: Path) -> int:
    """How many processes of the project whose journal `path` is (<project>/.mlstack/...)
    run, found by owner marker."""
    project = ProjectPaths.for_spec(path.parent.parent / "mlstack.yaml")
    if project.deployments_file != path.resolve():
        return 0  # not a project's journal (a test's file, say)
    return len(procs.owned(project.project_id))


def _repair_hint(path: Path, spec: Path | None) -> str:
    where = spec if spec is not None else path.parent.parent
    hint = (f"run: mlstack repair {shlex.quote(str(where))} (it rebuilds the journal from what "
            "runs and keeps the broken file beside it); mlstack down stops the project without it")
    previous = previous_copy(path)
    data = _read_quietly(previous)
    if data is not None and _sound(data):
        hint += f"; the previous good copy is {previous}"
    return hint
