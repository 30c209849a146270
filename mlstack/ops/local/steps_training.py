"""Deploy's training run for a system whose pipelines are not Prefect flows (target.
orchestrator: airflow): the training pipeline's steps of the generated `<package>/steps.py`,
in the contract's order, in the deploy's worker (mlstack.ops.local.worker), without promote.

The steps are the ones the Airflow tasks call (the same mlstack.runtime functions as the
Prefect tasks); the data between them are files in a folder of the state folder, removed at
the end. Each finished step appends a progress line (task, state, seconds, error) to the file
named by ENV_PROGRESS_FILE, as the Prefect flow's task hook does, so the deploy reports one
stage per step. A step is not retried here: deploy's own train stage is one try, and a failed
data check or gate is final anyway. The outcome is recorded in the state folder's training
file by the steps' own `promote(..., promote_model=False)`, and returned as the Prefect
flow's `training_flow(promote_model=False)` returns it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from mlstack.codegen.contract import ENV_PROGRESS_FILE, TRAINING_FILE

# step -> (its outputs, its inputs as {argument: (step, output)})
PIPELINE: tuple[tuple[str, tuple[str, ...], dict[str, tuple[str, str]]], ...] = (
    ("ingest", ("frames", "fingerprint"), {}),
    ("validate", ("report",), {"frames": ("ingest", "frames")}),
    ("feast_apply", (), {}),
    ("materialize", (), {}),
    ("training_set", ("out",), {"frames": ("ingest", "frames")}),
    ("train", ("model", "train_part", "test_part", "fit"), {"frame": ("training_set", "out")}),
    ("evaluate", ("scores",), {"model": ("train", "model"), "test_part": ("train", "test_part")}),
    ("register", ("model_tag",), {"model": ("train", "model"),
                                  "test_part": ("train", "test_part"),
                                  "scores": ("evaluate", "scores"),
                                  "fingerprint": ("ingest", "fingerprint")}),
)
PROMOTE_INPUTS = {"model_tag": ("register", "model_tag"), "scores": ("evaluate", "scores"),
                  "fingerprint": ("ingest", "fingerprint"), "report": ("validate", "report"),
                  "fit": ("train", "fit")}


def has_steps(package: str) -> bool:
    """True when the generated tree has `<package>/steps.py` and no Prefect flows."""
    if importlib.util.find_spec("pipelines") is not None and \
            importlib.util.find_spec("pipelines.flows") is not None:
        return False
    return importlib.util.find_spec(f"{package}.steps") is not None


def _progress(line: dict) -> None:
    path = os.environ.get(ENV_PROGRESS_FILE)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def train(package: str) -> dict:
    """Run the training steps (not promote's promotion) and return the recorded outcome."""
    steps = importlib.import_module(f"{package}.steps")
    settings = importlib.import_module(f"{package}.settings")
    run_id = f"deploy__{uuid.uuid4().hex[:12]}"
    folder = Path(settings.STATE_DIR) / "deploy_runs" / run_id
    made: dict[tuple[str, str], str] = {}
    try:
        for name, outputs, inputs in PIPELINE:
            paths = {out: str(folder / name / out) for out in outputs}
            _step(getattr(steps, name), name,
                  {**{arg: made[src] for arg, src in inputs.items()}, **paths})
            made.update({(name, out): path for out, path in paths.items()})
        steps.promote(**{arg: made[src] for arg, src in PROMOTE_INPUTS.items()},
                      run_id=run_id, promote_model=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return json.loads((Path(settings.STATE_DIR) / TRAINING_FILE).read_text(encoding="utf-8"))


def _step(function, name: str, arguments: dict) -> None:
    began = time.perf_counter()
    try:
        function(**arguments)
    except BaseException as exc:
        _progress({"task": name, "state": "FAILED",
                   "seconds": round(time.perf_counter() - began, 3),
                   "error": f"{type(exc).__name__}: {exc}"})
        raise
    _progress({"task": name, "state": "COMPLETED",
               "seconds": round(time.perf_counter() - began, 3)})
