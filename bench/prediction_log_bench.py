"""The prediction log's cost (issue 22): the generated churn service with
`monitoring.prediction_log` on and off, otherwise the same (the deployed version's tree
recompiled from the spec with only `enabled` changed, the same measured serving profile, the
same model, 2 workers each, on their own ports), interleaved round by round:

  - open loop at the spec's rate (slos.throughput_rps) for --seconds: p50, p99, errors;
  - closed loop at concurrency 64 for --seconds: answered req/s, p99, errors, and the CPU
    seconds of the service's process tree per answered request (steadier than req/s on a
    shared machine).

The issue's bar: p99 at the spec's rate within +10% of logging off (the p99 of every round's
requests pooled per side: a run's own p99 at 50 req/s is its 4th slowest request in 8 s),
throughput at c=64 within 5%. Also the rows the log wrote and dropped while measured (its stats files).

    .venv/bin/python -m bench.prediction_log_bench --root DIR [--rounds 5] [--seconds 8]

DIR holds a finished deployment (DIR/churn, DIR/home: a kept `python -m bench` deploy), or
is created with a fresh one. Prints one JSON object and writes it to
bench/results_prediction_log.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from bench.common import PYTHON, Processes, median, percentile, ratio, rnd
from bench.loadgen import closed_loop, open_loop_latencies, warm_up
from bench.router_bench import _deployment
from bench.s3_serving import _start, _variant, tree_cpu_seconds
from bench.s4_features import entity_keys
from bench.workspace import service_target
from mlstack.ops.local.living import prediction_log_counts

OUT = Path(__file__).parent / "results_prediction_log.json"


def _logging(on: bool):
    def edit(spec: dict) -> None:
        monitoring = spec.setdefault("monitoring", {})
        monitoring["prediction_log"] = {"enabled": on}
    return edit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    dep = _deployment(args.root)
    workdir = args.root / "log-bench"
    shutil.rmtree(workdir, ignore_errors=True)
    procs = Processes()
    spec_rate = float(__import__("yaml").safe_load(
        (dep.project / "mlstack.yaml").read_text())["slos"]["throughput_rps"])
    try:
        tag, targets, log_dirs = dep.model_tag, {}, {}
        for name, on in (("log off", False), ("log on", True)):
            code = _variant(dep, workdir, name.replace(" ", "-"), edit_spec=_logging(on))
            # both read the deploy's online store; the log's rows are told apart by version
            svc = _start(dep, procs, workdir, name, code, tag,
                         ["-m", "bentoml", "serve", service_target(code)],
                         {"MLSTACK_SERVING_VERSION": name.replace(" ", "-")}, workers=2)
            targets[name] = svc
            log_dirs[name] = Path(dep.runtime_env(code)["MLSTACK_STATE_DIR"]) / "prediction_log"
        bodies = [{"rows": [key]} for key in entity_keys(dep, 500, seed=1)]
        for svc in targets.values():
            warm_up(f"{svc['url']}/predict", bodies, 200)
        runs: dict[str, dict[str, list[dict]]] = {n: {"open": [], "c64": []} for n in targets}
        pooled: dict[str, list[float]] = {n: [] for n in targets}  # open-loop latencies
        loads: list[float] = []
        for round_ in range(args.rounds):
            # the order alternates round by round, so neither side always follows the other
            order = list(targets.items())
            for name, svc in (order if round_ % 2 == 0 else order[::-1]):
                url = f"{svc['url']}/predict"
                summary_, latencies = open_loop_latencies(url, bodies, rate=spec_rate,
                                                          duration=args.seconds)
                runs[name]["open"].append(summary_)
                pooled[name].extend(latencies)
                time.sleep(0.5)
                cpu_before = tree_cpu_seconds(svc["pid"])
                c64 = closed_loop(url, bodies, concurrency=64, duration=args.seconds)
                answered = c64["requests"] - c64["errors"]
                c64["cpu_ms_per_answer"] = ((tree_cpu_seconds(svc["pid"]) - cpu_before)
                                            * 1000 / answered if answered else None)
                runs[name]["c64"].append(c64)
                loads.append(os.getloadavg()[0])
                time.sleep(0.5)
        summary = {}
        for name, r in runs.items():
            summary[name] = {
                "open_p50_ms": median([x["p50_ms"] for x in r["open"]]),
                "open_p99_ms": median([x["p99_ms"] for x in r["open"]]),
                "open_p99_runs": [x["p99_ms"] for x in r["open"]],
                # every round's requests together: the bar's figure
                "open_p99_pooled_ms": percentile(pooled[name], 99),
                "open_requests_pooled": len(pooled[name]),
                "open_errors": sum(x["errors"] for x in r["open"]),
                "c64_rps": median([x["throughput_rps"] for x in r["c64"]]),
                "c64_rps_runs": [rnd(x["throughput_rps"], 1) for x in r["c64"]],
                "c64_p99_ms": median([x["p99_ms"] for x in r["c64"]]),
                "c64_errors": sum(x["errors"] for x in r["c64"]),
                "c64_cpu_ms_per_answer": median([x["cpu_ms_per_answer"] for x in r["c64"]]),
                "c64_cpu_ms_runs": [rnd(x["cpu_ms_per_answer"], 3) for x in r["c64"]]}
        time.sleep(3)  # the writers' last flush
        logged = prediction_log_counts(log_dirs["log on"]).get("log-on", {})
        on, off = summary["log on"], summary["log off"]
        result = {
            "setup": {"service": "the generated churn service (BentoML, 2 workers, ONNX "
                                 "Runtime, the deploy's measured batching), log on vs off, "
                                 "otherwise the same tree", "spec_rate_rps": spec_rate,
                      "rounds": args.rounds, "seconds": args.seconds,
                      "load": [rnd(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
                      "load_of_rounds": [rnd(min(loads), 2), rnd(max(loads), 2)],
                      "python": PYTHON},
            "summary": summary,
            "p99_at_spec_rate_ratio": rnd(ratio(on["open_p99_pooled_ms"],
                                                off["open_p99_pooled_ms"]), 3),
            "p99_at_spec_rate_ratio_of_run_medians": rnd(ratio(on["open_p99_ms"],
                                                               off["open_p99_ms"]), 3),
            "c64_throughput_ratio": rnd(ratio(on["c64_rps"], off["c64_rps"]), 3),
            "c64_cpu_per_answer_ratio": rnd(ratio(on["c64_cpu_ms_per_answer"],
                                                  off["c64_cpu_ms_per_answer"]), 3),
            "log_rows": logged, "runs": runs}
        text = json.dumps(result, indent=1, sort_keys=True)
        OUT.write_text(text + "\n")
        print(text)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
