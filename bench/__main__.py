"""Run the benchmarks and write bench/results.md and bench/results.json.

    bash bench/run.sh                   # everything (about 12 minutes on 2 cores)
    .venv/bin/python -m bench --sections 1,2

Sections: 1 lint start-up, 2 compile scaling, 3 serving, 4 online features, 5 pipeline
overhead, 6 deploy, 7 the training flow on a local Ray cluster (target.compute). 3-5 need a deployed churn project: section 6 makes it (or, when 6 is not
selected, one plain deploy). Everything runs in a temporary folder and on loopback; every
process the bench starts is stopped by PID before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import report
from bench.common import REPO, Processes, load_average

SECTIONS = ("1", "2", "3", "4", "5", "6", "7")
SETTLE_LOAD = 1.5  # wait (a little) for the machine to calm down before timing-sensitive runs


def settle(max_wait: float = 45.0) -> list[float]:
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > SETTLE_LOAD and time.monotonic() < deadline:
        time.sleep(3)
    return load_average()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated section numbers (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "bench",
                        help="folder for results.md and results.json (default: bench/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (a smoke run; figures are noisier)")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="only write results.md again from a results.json")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        (args.out / "results.md").write_text(report.render(results))
        return 0
    chosen = [s for s in args.sections.split(",") if s]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    quick = args.quick
    workdir = Path(tempfile.mkdtemp(prefix="mlstack-bench-"))
    procs = Processes()
    results: dict = {"machine": report.machine(), "sections": {}, "loads": {}}
    began = time.perf_counter()
    deployment = None
    deployments: list = []  # every deployment made: `down` at the end, whatever happens

    def timed(name: str, call):
        load_before = settle() if name in ("1", "3", "4") else load_average()
        t0 = time.perf_counter()
        print(f"[bench] section {name} ...", flush=True)
        out = call()
        results["loads"][name] = {"before": load_before, "after": load_average(),
                                  "seconds": round(time.perf_counter() - t0, 1)}
        print(f"[bench] section {name} done in {results['loads'][name]['seconds']} s "
              f"(load {results['loads'][name]['after']})", flush=True)
        return out

    try:
        if "1" in chosen:
            from bench import s1_lint

            results["sections"]["1"] = timed("1", lambda: s1_lint.run(7 if quick else 15))
        if "2" in chosen:
            from bench import s2_compile

            results["sections"]["2"] = timed("2", lambda: s2_compile.run(
                workdir / "scale", 2 if quick else 3))
        if "6" in chosen:
            from bench import s6_deploy

            section, deployment = timed("6", lambda: s6_deploy.run(
                workdir / "deploy", procs, deployments, cold_runs=1 if quick else 2,
                redeploys=2 if quick else 3))
            results["sections"]["6"] = section
        elif {"3", "4", "5"} & set(chosen):
            from bench.workspace import new_deployment

            deployment = new_deployment(workdir / "deploy" / "deploy-0")
            deployments.append(deployment)
            _seconds, made = deployment.deploy("--no-verify")
            if made.get("failed"):
                raise RuntimeError(f"the deploy that sections 3-5 need failed: {made}")
            deployment.down(procs)
        inprocess = None
        if {"3", "4"} & set(chosen):
            from bench import s4_features

            inprocess = timed("4", lambda: s4_features.measure(
                deployment, workdir, calls=300 if quick else 1000, rounds=2 if quick else 3))
            if "4" in chosen:
                results["sections"]["4"] = s4_features.section(inprocess)
        if "3" in chosen:
            from bench import s3_serving
            from bench.s4_features import entity_keys

            bodies = [{"rows": [key]} for key in entity_keys(deployment, 500, seed=1)]
            results["sections"]["3"] = timed("3", lambda: s3_serving.run(
                deployment, workdir / "serving", procs, bodies, inprocess,
                reps=2 if quick else 3, duration=3.0 if quick else 4.0))
        if "5" in chosen:
            from bench import s5_pipeline

            results["sections"]["5"] = timed("5", lambda: s5_pipeline.run(
                deployment, workdir, runs=2 if quick else 3))
        if "7" in chosen:
            from bench import s7_ray

            results["sections"]["7"] = timed("7", lambda: s7_ray.run(
                workdir / "compute", procs, deployments, runs=1 if quick else 2))
    finally:
        for made in deployments:
            made.down(procs)
        procs.stop_all()
        results["total_seconds"] = round(time.perf_counter() - began, 1)
        results["quick"] = quick
        if results["sections"]:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.json").write_text(
                json.dumps(results, indent=2) + "\n")  # in the order measured
            (args.out / "results.md").write_text(report.render(results))
        if args.keep:
            print(f"[bench] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"[bench] wrote {args.out / 'results.md'} in {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
