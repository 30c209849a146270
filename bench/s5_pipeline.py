"""Section 5: the generated Prefect training flow vs the same steps called directly (each
task's `.fn`, in the same order, same process), on the deployed churn tree with fresh
Prefect/BentoML homes and Feast state. Where the time goes: per-step times both ways, the
flow's time outside its tasks, and a cProfile of one warm flow run."""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import PYTHON, REPO, median, ratio, rnd, timed_run

WORKER = REPO / "bench" / "workers" / "pipeline.py"


def run(deployment, workdir: Path, runs: int = 3) -> dict:
    folder = workdir / "pipeline"
    for name in ("prefect", "bentoml", "state", "work"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    env = deployment.runtime_env(
        deployment.build_dir, PREFECT_HOME=str(folder / "prefect"),
        BENTOML_HOME=str(folder / "bentoml"), MLSTACK_STATE_DIR=str(folder / "state"))
    _w, _c, out = timed_run([PYTHON, str(WORKER), "--runs", str(runs), "--work",
                             str(folder / "work"), "--profile", str(folder / "profile.txt")],
                            env=env, cwd=deployment.build_dir, timeout=900)
    data = json.loads(out.strip().splitlines()[-1])
    direct = median([r["wall_s"] for r in data["direct"]])
    flow = median([r["wall_s"] for r in data["flow"]])
    steps = {}
    for name in data["direct"][0]["steps_s"]:
        d = median([r["steps_s"].get(name) for r in data["direct"]])
        f = median([r["steps_s"].get(name) for r in data["flow"]])
        steps[name] = {"direct_s": rnd(d, 3), "in_flow_s": rnd(f, 3)}
    in_tasks = median([sum(r["steps_s"].values()) for r in data["flow"]])
    profile = data["profiled_flow"]["profile"] if data.get("profiled_flow") else {}
    return {
        "runs": runs,
        "import_flows_module_s": rnd(data["import_s"], 2),
        "first_flow_run_s": rnd(data["first_flow"]["wall_s"], 2),
        "first_direct_run_s": rnd(data["warm_direct"]["wall_s"], 2),
        "direct_s": rnd(direct, 3),
        "flow_s": rnd(flow, 3),
        "ratio": rnd(ratio(flow, direct), 2),
        "flow_overhead_s": rnd(flow - direct, 3),
        "flow_time_in_tasks_s": rnd(in_tasks, 3),
        "flow_time_outside_tasks_s": rnd(flow - in_tasks, 3),
        "steps": steps,
        "profiled_flow": {k: rnd(v, 3) for k, v in profile.items()},
    }
