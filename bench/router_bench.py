"""Section 3, through the router: the generated service and the expert's, each on its own
port and through mlstack's router (mlstack.ops.local.router, one backend, the limits deploy
writes), closed loop at concurrency 1/16/64, rounds interleaved across the four targets. For
every run: answered req/s, the service tree's CPU per answered request, the router process's
CPU per answered request, refusals (HTTP 503) and the load average.

    .venv/bin/python -m bench.router_bench --root DIR [--rounds 3] [--seconds 4]

DIR holds a finished deployment (DIR/churn, DIR/home: a kept `python -m bench` deploy), or
is created with a fresh one. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import psutil

from bench.common import PYTHON, Processes, free_port, median, rnd
from bench.common import wait_http_ready as wait_ready
from bench.loadgen import closed_loop, warm_up
from bench.s3_serving import (
    EXPERT,
    EXPERT_WORKERS,
    NO_ACCESS_LOG,
    _start,
    _variant,
    tree_cpu_seconds,
    version_dir,
)
from bench.s4_features import entity_keys
from bench.workspace import Deployment, new_deployment, service_target
from mlstack.ops.local.router import write_table

CONCURRENCY = (1, 16, 64)
NO_SPANS = '\n    tracing={"excluded_urls": [".*"]},'


def _spans(on: bool):
    """The service module with BentoML's OpenTelemetry spans on (the template before) or
    off (the template now), whichever the deployed version was compiled with."""
    def edit(source: str) -> str:
        source = source.replace(NO_SPANS, "")
        if on:
            return source
        edited, count = NO_ACCESS_LOG.subn(lambda m: m.group(0) + NO_SPANS, source)
        if count != 1:
            raise RuntimeError("the generated service changed; update NO_ACCESS_LOG")
        return edited
    return edit
# as deploy writes them for churn (its .mlstack/router.json)
ROUTER_LIMITS = {"backend_timeout_s": 5.0, "max_in_flight": 64, "max_queue": 256,
                 "queue_timeout_s": 1.0}


def _deployment(root: Path) -> Deployment:
    if (root / "churn" / ".mlstack" / "deployments.json").exists():
        return Deployment(root=root, project=root / "churn", home=root / "home",
                          port=free_port())
    dep = new_deployment(root)
    _wall, report = dep.deploy()
    if report.get("failed"):
        raise RuntimeError(f"deploy failed: {report}")
    return dep


def _router(procs: Processes, workdir: Path, name: str, backend_url: str) -> dict:
    port = free_port()
    config = workdir / f"router-{name}.json"
    write_table(config, [{"version": "v1", "url": backend_url, "weight": 100}], ROUTER_LIMITS)
    log = workdir / "logs" / f"router-{name}.log"
    pid = procs.start([PYTHON, "-m", "mlstack.ops.local.router", "--port", str(port),
                       "--config", str(config)], cwd=Path.cwd(), env=dict(os.environ), log=log)
    wait_ready(f"http://127.0.0.1:{port}/-/router", pid, procs, 60.0, log)
    return {"url": f"http://127.0.0.1:{port}", "pid": pid}


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _run(target: dict, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    service_before = tree_cpu_seconds(target["service_pid"])
    router_before = _cpu(target["router_pid"]) if target.get("router_pid") else 0.0
    out = closed_loop(f"{target['url']}/predict", bodies, concurrency=concurrency,
                      duration=seconds)
    answered = out["requests"] - out["errors"]
    service_cpu = tree_cpu_seconds(target["service_pid"]) - service_before
    router_cpu = (_cpu(target["router_pid"]) - router_before) if target.get("router_pid") \
        else None
    def per(s):
        return (rnd(s * 1000 / answered, 3) if answered and s is not None else None)
    return {"rps": rnd(out["throughput_rps"], 1), "p50_ms": out["p50_ms"], "p99_ms": out["p99_ms"],
            "errors": out["errors"], "statuses": out["statuses"],
            "service_cpu_ms": per(service_cpu), "router_cpu_ms": per(router_cpu),
            "load": rnd(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--only", default="generated,expert",
                        help="of: generated, generated (spans on), expert")
    parser.add_argument("--no-router", action="store_true")
    args = parser.parse_args()
    dep = _deployment(args.root)
    workdir = args.root / "router-bench"
    shutil.rmtree(workdir, ignore_errors=True)  # this bench's own copies, from a last run
    procs = Processes()
    try:
        deployed, tag = version_dir(dep), dep.model_tag
        services = {}
        variants = {"generated": False, "generated (spans on)": True}
        for name, spans in variants.items():
            if name not in args.only.split(","):
                continue
            code = _variant(dep, workdir, name.replace(", ", "-").replace(" ", "-"),
                            edit_service=_spans(spans))
            services[name] = _start(dep, procs, workdir, name, code, tag, [
                "-m", "bentoml", "serve", service_target(code)], {}, workers=2)
        if "expert" in args.only.split(","):
            services["expert"] = _start(
                dep, procs, workdir, "expert", EXPERT, tag,
                ["-m", "uvicorn", "expert_service:app", "--workers", str(EXPERT_WORKERS),
                 "--loop", "uvloop", "--http", "httptools", "--no-access-log"], {},
                env_dir=deployed, workers=EXPERT_WORKERS,
                ready_line="Application startup complete")
        targets = {}
        for name, svc in services.items():
            if args.no_router:
                targets[name] = {"url": svc["url"], "service_pid": svc["pid"]}
                continue
            router = _router(procs, workdir, name, svc["url"])
            targets[f"{name}, service port"] = {"url": svc["url"], "service_pid": svc["pid"]}
            targets[f"{name}, through the router"] = {
                "url": router["url"], "service_pid": svc["pid"], "router_pid": router["pid"]}
        bodies = [{"rows": [key]} for key in entity_keys(dep, 500, seed=1)]
        for target in targets.values():
            warm_up(f"{target['url']}/predict", bodies, 200)
        runs: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in CONCURRENCY}
                                                  for n in targets}
        for c in CONCURRENCY:
            for _ in range(args.rounds):
                for name, target in targets.items():
                    runs[name][c].append(_run(target, bodies, c, args.seconds))
                    time.sleep(0.3)
        summary = {}
        for name in targets:
            for c in CONCURRENCY:
                rs = runs[name][c]
                summary[f"{name} c={c}"] = {
                    "rps": median([r["rps"] for r in rs]),
                    "rps_runs": [r["rps"] for r in rs],
                    "p99_ms": median([r["p99_ms"] for r in rs]),
                    "service_cpu_ms": median([r["service_cpu_ms"] for r in rs]),
                    "router_cpu_ms": (median([r["router_cpu_ms"] for r in rs])
                                      if rs[0]["router_cpu_ms"] is not None else None),
                    "errors": sum(r["errors"] for r in rs),
                    "loads": [r["load"] for r in rs]}
        print(json.dumps({"summary": summary, "runs": runs}, indent=1, sort_keys=True))
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
