"""The generated training flow vs the same steps called directly (each task's `.fn`), in one
process with fresh Prefect/BentoML homes and Feast state (run by the bench with the deployed
tree on PYTHONPATH; prints one JSON object).

    python bench/workers/pipeline.py --runs 3 --profile profile.txt

Order: import, one direct run (warms the caches and fills the online store, as the flow's
first run would), the first flow run (it starts Prefect's temporary API on a fresh database),
then direct and flow runs alternately. Direct runs log through the runtime library's
fallback (`mlstack.runtime.logs`: the standard logger "mlstack.runtime" outside a run), set
to the flow's level. Per-step times: measured around each call
for direct runs, Prefect's task run times (from the generated progress hook) for flow runs.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import logging
import os
import pstats
import time
from pathlib import Path

STEPS = ("ingest", "validate", "feast_apply", "materialize", "training_set", "train",
         "evaluate", "register", "promote")


def direct(flows) -> dict:
    """training_flow's body with each task's function called directly."""
    times = {}

    def step(name, call, *args):
        began = time.perf_counter()
        out = call(*args)
        times[name] = time.perf_counter() - began
        return out

    began = time.perf_counter()
    frames, fingerprint = step("ingest", flows.ingest.fn)
    step("validate", flows.validate.fn, frames)
    step("feast_apply", flows.apply_features.fn)
    step("materialize", flows.materialize_features.fn)
    frame = step("training_set", flows.build_training_set.fn, frames)
    model, _train, test = step("train", flows.train.fn, frame)
    evaluation = step("evaluate", flows.evaluate.fn, model, test)
    tag = step("register", flows.register.fn, model, test, evaluation["metrics"], fingerprint)
    step("promote", flows.promote.fn, tag, evaluation["metrics"], fingerprint)
    return {"wall_s": time.perf_counter() - began, "steps_s": times, "model_tag": tag}


def flow_run(flows, progress: Path, profile: cProfile.Profile | None = None) -> dict:
    progress.unlink(missing_ok=True)
    os.environ["MLSTACK_PROGRESS_FILE"] = str(progress)
    began = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        result = flows.training_flow()
    finally:
        if profile is not None:
            profile.disable()
    wall = time.perf_counter() - began
    lines = [json.loads(x) for x in progress.read_text().splitlines()] if progress.exists() else []
    steps = {line["task"]: line["seconds"] for line in lines}
    return {"wall_s": wall, "steps_s": steps, "model_tag": result["model_tag"]}


def profile_summary(profile: cProfile.Profile, limit: int = 30) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def where_time_goes(profile: cProfile.Profile, flows) -> dict:
    """From a profiled flow run (main thread): the task functions' own time, the wait for
    the heartbeat thread at the end of the run, and the requests to the Prefect API."""
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    bodies = {getattr(flows, n).fn.__code__.co_name for n in (
        "ingest", "validate", "apply_features", "materialize_features", "build_training_set",
        "train", "evaluate", "register", "promote")}
    flows_file = flows.__file__
    out = {"task_bodies_s": 0.0, "heartbeat_start_and_join_s": 0.0, "api_requests_s": 0.0,
           "api_requests": 0, "flow_call_s": 0.0}
    for (file, _line, name), (_cc, calls, _tt, cumulative, _callers) in stats.items():
        if file == flows_file and name in bodies:
            out["task_bodies_s"] += cumulative
        elif file.endswith("prefect/flow_engine.py") and name == "_send_heartbeats":
            out["heartbeat_start_and_join_s"] += cumulative
        elif file.endswith("prefect/client/base.py") and name == "send":
            out["api_requests_s"] += cumulative
            out["api_requests"] += calls
        elif file.endswith("prefect/flows.py") and name == "__call__":
            out["flow_call_s"] = max(out["flow_call_s"], cumulative)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    flows = importlib.import_module("pipelines.flows")
    imported = time.perf_counter() - began
    logging.getLogger("mlstack.runtime").setLevel(
        os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"))

    def run_direct():
        return direct(flows)

    warm = run_direct()
    first = flow_run(flows, args.work / "progress-0.jsonl")
    directs, flow_runs = [], []
    for i in range(args.runs):
        directs.append(run_direct())
        flow_runs.append(flow_run(flows, args.work / f"progress-{i + 1}.jsonl"))
    profiled = None
    if args.profile:
        profile = cProfile.Profile()
        profiled = flow_run(flows, args.work / "progress-profile.jsonl", profile)
        args.profile.write_text(profile_summary(profile))
        profiled["profile"] = where_time_goes(profile, flows)
    print(json.dumps({"import_s": imported, "warm_direct": warm, "first_flow": first,
                      "direct": directs, "flow": flow_runs, "profiled_flow": profiled}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
