"""Deployment state of a local project: versions, which one serves, the router, history.

Kept in <project>/.mlstack/deployments.json, written atomically. Timestamps live here (state,
not generated output). Every process a deploy starts is recorded with its PID.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path


class VersionStatus(StrEnum):
    STARTING = "starting"
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


@dataclass
class DeploymentState:
    versions: list[Version] = field(default_factory=list)
    current: str | None = None
    previous: str | None = None
    router: RouterInfo = field(default_factory=RouterInfo)
    history: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> DeploymentState:
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(versions=[Version(**{**v, "status": VersionStatus(v.get("status", "starting"))})
                             for v in data.get("versions", [])],
                   current=data.get("current"), previous=data.get("previous"),
                   router=RouterInfo(**data.get("router", {})),
                   history=data.get("history", []))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def get(self, version: str | None) -> Version | None:
        return next((v for v in self.versions if v.version == version), None)

    def next_version(self) -> str:
        numbers = [int(v.version[1:]) for v in self.versions if v.version[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1}"

    def record(self, event: str, **details) -> None:
        self.history.append({"event": event, "at": round(time.time(), 3), **details})
        self.history = self.history[-200:]
