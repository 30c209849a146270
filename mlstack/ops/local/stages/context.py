"""What every deploy stage reads and updates: one `DeployContext` per version brought up,
the options of the deploy and the log of its stages (each one timed, reported to the
progress object and recorded in the journal's deploy entry)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlstack.codegen.contract import PROMOTE_TASK, TRAINING_TASKS, package_name
from mlstack.diagnostics.errors import StageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.ops.local.state import DeploymentState, Version
from mlstack.ops.paths import ProjectPaths
from mlstack.ops.report import StageRecord, StageStatus

if TYPE_CHECKING:  # for the annotation only: no import of stages.plan at run time
    from mlstack.ops.local.stages.plan import DeployPlan

DEFAULT_RATE = 20.0
LOAD_TIMEOUT = 10.0  # seconds a load-test request may take before it counts as failed
# deploy's worker runs the flow without its promote task: deploy promotes after the rollout
FLOW_STAGES = tuple(t for t in TRAINING_TASKS if t != PROMOTE_TASK)


@dataclass(frozen=True)
class DeployOptions:
    port: int = 3000  # the router: the stable endpoint
    verify: bool = True
    duration: float = 5.0  # seconds of load for the SLO verification
    rate: float | None = None  # requests per second (default: the throughput SLO, else 20)
    concurrency: int = 64  # most requests in flight at once
    skew_sample: int = 50
    force: bool = False  # overwrite hand-edited generated files
    retrain: bool = False  # train even when nothing the model depends on changed
    verify_limit: float = 30.0  # most seconds the SLO load test runs to gather its samples
    step_limit: float = 60.0  # most seconds a canary step runs to gather its samples


class NullProgress:
    def start(self, stage: str) -> None: ...

    def finish(self, record: StageRecord) -> None: ...


class StageLog:
    """The records of a deploy's stages, in order, each passed to the progress object."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.records: list[StageRecord] = []

    @contextmanager
    def stage(self, name: str):
        self.progress.start(name)
        began = time.perf_counter()
        record = StageRecord(name, StageStatus.DONE, 0.0)
        try:
            yield record
        except StageError as exc:
            record.status, record.detail = StageStatus.FAILED, exc.message
            raise
        except Exception as exc:
            record.status, record.detail = StageStatus.FAILED, str(exc)
            raise StageError(name, str(exc)) from exc
        finally:
            record.seconds = round(time.perf_counter() - began, 3)
            self.records.append(record)
            self.progress.finish(record)

    def add(self, record: StageRecord) -> None:
        self.records.append(record)
        self.progress.finish(record)

    def skip(self, name: str, why: str) -> None:
        self.add(StageRecord(name, StageStatus.SKIPPED, 0.0, why))

    def note(self, message: str) -> None:
        note = getattr(self.progress, "note", None)
        if note is not None:
            note(message)


class JournaledProgress:
    """Passes progress on, and records the stage in the state's deploy entry, so a deploy
    killed mid-way leaves a record of where it was."""

    def __init__(self, progress, state: DeploymentState):
        self.progress, self.state = progress, state

    def start(self, stage: str) -> None:
        if self.state.deploy:
            self.state.deploy["stage"] = stage
            self.state.save()
        self.progress.start(stage)

    def finish(self, record: StageRecord) -> None:
        self.progress.finish(record)

    def __getattr__(self, name):  # note(), close() ... of the progress object
        return getattr(self.progress, name)


@dataclass
class DeployContext:
    """One deploy of one version: what every stage reads and updates."""

    system: SystemIR
    paths: ProjectPaths
    options: DeployOptions
    state: DeploymentState
    current: Version | None  # the version serving before this deploy
    version: Version  # the version this deploy brings up
    stages: StageLog
    plan: DeployPlan | None = None  # the plan being applied (stages.plan)
    code_dir: Path = Path()
    profiled: dict | None = None  # the train worker's profile of the model it registered
    # what the stages found, for the next stages and the report
    skew: dict = field(default_factory=dict)
    endpoint: str = "predict"  # the load's endpoint: predict, or rank for a ranking model
    bodies: list[dict] = field(default_factory=list)  # the load's request bodies
    load: dict = field(default_factory=dict)
    rollout_steps: list[dict] = field(default_factory=list)

    @property
    def package(self) -> str:
        return package_name(self.system)

    @property
    def rate(self) -> float:
        return self.options.rate or self.system.slos.throughput_rps or DEFAULT_RATE
