"""Section 7: the churn training flow single-process vs on a local Ray cluster (target.compute)
with 1 and 2 worker nodes, on this machine.

One churn project (fresh MLSTACK_HOME) is deployed with `mlstack deploy --no-verify`, then
retrained (`--retrain`) in each configuration: no compute, `compute: {workers: 1}`,
`compute: {workers: 2}` (1 CPU, 2Gi each), `runs` times each. The first deploy of a Ray
configuration starts its cluster (the `compute` stage); the next ones keep it. The flow's wall
time is the sum of its stages in the deploy's own report (ingest ... register); the worker's
start (imports, Prefect's temporary API) is outside it and the same in every configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.common import median, ratio, rnd
from bench.workspace import Deployment, new_deployment

FLOW_STAGES = ("ingest", "validate", "feast_apply", "materialize", "training_set", "train",
               "evaluate", "register")
TARGET = "target:\n  kind: local\n"
CONFIGS = (("single-process", None), ("ray, 1 worker", 1), ("ray, 2 workers", 2))


def _set_compute(project: Path, workers: int | None) -> None:
    spec = project / "mlstack.yaml"
    text = re.sub(r"  compute:\n(    .*\n)+", "", spec.read_text())
    if workers is not None:
        text = text.replace(TARGET, TARGET + "  compute:\n    engine: ray\n"
                            f"    workers: {workers}\n    worker: {{cpu: 1, memory: 2Gi}}\n")
    spec.write_text(text)


def _flow_seconds(report: dict) -> tuple[float, dict, float | None]:
    stages = {s["name"]: s["seconds"] for s in report["stages"]}
    missing = [s for s in FLOW_STAGES if s not in stages]
    if missing:
        raise RuntimeError(f"the deploy ran no flow stages {missing}: {report['stages']}")
    return (sum(stages[s] for s in FLOW_STAGES), {s: stages[s] for s in FLOW_STAGES},
            stages.get("compute"))


def run(workdir: Path, procs, cleanup: list, runs: int = 2) -> dict:
    deployment: Deployment = new_deployment(workdir / "ray")
    cleanup.append(deployment)
    results = {}
    first = True
    for name, workers in CONFIGS:
        _set_compute(deployment.project, workers)
        walls, steps, starts, deploys = [], [], [], []
        for _ in range(runs + (1 if first else 0)):
            wall, report = deployment.deploy("--no-verify", *(() if first else ("--retrain",)))
            if report.get("failed"):
                raise RuntimeError(f"{name}: the deploy failed: {report['failed']}")
            flow, per_step, compute = _flow_seconds(report)
            if first:  # the project's first deploy: Feast's first apply, a fresh registry
                first = False
                continue
            walls.append(flow)
            steps.append(per_step)
            deploys.append(wall)
            if compute is not None:
                starts.append(compute)
        results[name] = {
            "workers": workers or 0,
            "flow_s": [rnd(w, 2) for w in walls],
            "flow_median_s": rnd(median(walls), 2),
            "deploy_median_s": rnd(median(deploys), 1),
            "cluster_start_s": rnd(starts[0], 1) if starts else None,
            "cluster_kept_s": rnd(median(starts[1:]), 2) if len(starts) > 1 else None,
            "steps_median_s": {s: rnd(median([p[s] for p in steps]), 2) for s in FLOW_STAGES},
        }
    deployment.down(procs)
    single = results["single-process"]["flow_median_s"]
    for entry in results.values():
        entry["ratio_to_single"] = rnd(ratio(entry["flow_median_s"], single), 2)
    return {"runs": runs, "configs": results}
