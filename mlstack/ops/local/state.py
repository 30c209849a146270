"""Deployment state of a local project: versions, which one serves, the router, history.

Kept in <project>/.mlstack/deployments.json, written atomically. Timestamps live here (state,
not generated output). Every process a deploy starts is recorded with its PID.

The file is also a journal, written before each action: `begin(action)` records the intent
(and saves), `end(entry)` its result (and saves); the router's weights are recorded in
`routes` before its table changes; `deploy` names the deploy in progress. A deploy killed at
any point leaves a state that says what it was doing, and the next deploy, rollback or down
reconciles it (mlstack.ops.local.reconcile).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path


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

    @classmethod
    def load(cls, path: Path) -> DeploymentState:
        if not path.is_file():
            state = cls()
        else:
            data = json.loads(path.read_text())
            state = cls(
                versions=[Version(**{**v, "status": VersionStatus(v.get("status", "starting"))})
                          for v in data.get("versions", [])],
                current=data.get("current"), previous=data.get("previous"),
                router=RouterInfo(**data.get("router", {})),
                history=data.get("history", []), routes=data.get("routes", {}),
                journal=data.get("journal", []), deploy=data.get("deploy", {}),
                cluster=ClusterInfo(**data.get("cluster", {})))
        state.path = path
        return state

    def save(self, path: Path | None = None) -> None:
        path = path or getattr(self, "path", None)
        if path is None:
            raise ValueError("this state was not loaded from a file: name one")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
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

    def get(self, version: str | None) -> Version | None:
        return next((v for v in self.versions if v.version == version), None)

    def next_version(self) -> str:
        numbers = [int(v.version[1:]) for v in self.versions if v.version[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1}"

    def record(self, event: str, **details) -> None:
        self.history.append({"event": event, "at": round(time.time(), 3), **details})
        self.history = self.history[-200:]
