"""/rank (issue 20): the search-ranking blueprint's generated ranking endpoint against the one
an expert writes by hand (bench/expert/expert_rank_service.py: FastAPI on uvicorn with uvloop
and httptools, 2 workers, Feast with the cached feature service, the same LGBMRanker on ONNX
Runtime with 1 thread, orjson), built and loaded the same way.

    .venv/bin/python -m bench.rank_bench --root DIR [--rounds 3] [--seconds 4]
        [--slo-seconds 10] [--calls 200] [--out bench/results_rank.json]

DIR holds a finished search-ranking deployment (DIR/search-ranking, DIR/home: a kept run of
this bench), or is created with a fresh one (`mlstack init --blueprint search-ranking`, whose
sample is moved to the present, and `mlstack deploy` with a private MLSTACK_HOME; local only).
The deployment's own processes are stopped (`mlstack down`) before anything is measured, and
again at the end; the state they leave (Feast registry, materialized SQLite online store, the
flow-trained model) is what both services read.

1. In process (a child with the deployed version's tree on PYTHONPATH): the cost of the
   ranking path by candidate count (1, 5, 10, 20, 50, 100): the model alone (ONNX Runtime on a
   prepared matrix), the generated input path (`inputs`), input path + model (`served_rows`,
   what /rank's batcher calls), and the rank path (served_rows, `serving.ranked`, the answer's
   JSON; no batcher hop, no prediction log), against the expert's `score_pairs` and its rank
   path (score_pairs, sort, orjson). Candidates are real (query_id, doc_id) pairs with fresh
   features; a query has 20 logged candidates, so 50 and 100 span 3 and 5 queries. Rounds
   interleave the cases. What-if: the generated paths on mlstack's direct SQLite read when
   the service itself fell back to Feast and that read answers exactly as Feast does.
2. Over HTTP, each on its own port, 2 workers: /rank bodies of 20 candidates (every fresh
   query's logged candidates, as mlstack.ops.local.worker.rank_requests builds them from
   rows; top_k 10). Answers compared first (same order, scores within 1e-5); then open loop at
   the spec's throughput (50 req/s) for --slo-seconds, rounds interleaved: p50/p95/p99, errors;
   then closed loop at concurrency 1, 16, 64 for --seconds, rounds interleaved: answered
   req/s, p99, CPU ms per answered request of the service's process tree. The 1-minute load
   average is taken after every run.

Writes the raw numbers to --out (default bench/results_rank.json) and prints the summary.
Every process it starts is stopped by PID (process group) before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import (
    MLSTACK,
    PYTHON,
    REPO,
    Processes,
    free_port,
    load_average,
    median,
    ratio,
    rnd,
    timed_run,
)
from bench.loadgen import closed_loop, open_loop, warm_up
from bench.s3_serving import EXPERT, EXPERT_WORKERS, _start, tree_cpu_seconds, version_dir
from bench.workers.inprocess import _summary, _timings
from bench.workspace import Deployment, service_target

PROJECT = "search-ranking"
CANDIDATES = (1, 5, 10, 20, 50, 100)
CONCURRENCY = (1, 16, 64)
REQUEST_CANDIDATES = 20
TOP_K = 10
QUERY_TTL_S = 86400  # the query_document view's TTL (the spec's 1d)
FRESH_MARGIN_S = 1800  # a pair must stay fresh for the whole run
EXPERT_ARGS = ["-m", "uvicorn", "expert_rank_service:app", "--workers", str(EXPERT_WORKERS),
               "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
DEFAULT_OUT = REPO / "bench" / "results_rank.json"


# --- the deployment -----------------------------------------------------------------------

def deployment(root: Path) -> tuple[Deployment, dict | None]:
    """The deployment under root, deployed now when there is none: (it, deploy's report)."""
    root.mkdir(parents=True, exist_ok=True)
    dep = Deployment(root=root, project=root / PROJECT, home=root / "home", port=free_port())
    if (dep.project / ".mlstack" / "deployments.json").exists():
        return dep, None
    timed_run([MLSTACK, "init", str(dep.project), "--blueprint", PROJECT], env=dep.env,
              cwd=root)
    wall, report = dep.deploy()
    if report.get("failed"):
        raise RuntimeError(f"deploy failed: {report}")
    return dep, {"seconds": rnd(wall, 1), "version": report.get("version")}


def fresh_rows(dep: Deployment) -> list[dict]:
    """(query_id, doc_id) rows whose logged pair features stay inside the view's TTL for the
    whole run, by query (newest query first), candidates in logged order."""
    import pandas as pd

    data = pd.read_parquet(dep.project / "data" / "query_documents.parquet")
    cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=QUERY_TTL_S - FRESH_MARGIN_S)
    data = data[data["event_timestamp"] >= cutoff]
    order = data.groupby("query_id")["event_timestamp"].max().sort_values(ascending=False)
    rows = []
    for query in order.index:
        rows += [{"query_id": int(query), "doc_id": int(d)}
                 for d in data.loc[data["query_id"] == query, "doc_id"]]
    return rows


def rank_bodies(rows: list[dict]) -> list[dict]:
    from mlstack.ops.local.worker import rank_requests

    bodies = [{**body, "top_k": TOP_K} for _, body in rank_requests(rows, "query_id")]
    random.Random(1).shuffle(bodies)
    return bodies


# --- 1. in process ------------------------------------------------------------------------

def inprocess(dep: Deployment, workdir: Path, rows: list[dict], calls: int,
              rounds: int) -> dict:
    rows_file = workdir / "rows.json"
    rows_file.write_text(json.dumps(rows))
    code = version_dir(dep)
    env = dep.runtime_env(code, MLSTACK_MODEL_TAG=dep.model_tag)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO)])
    _w, _c, out = timed_run([PYTHON, "-m", "bench.rank_bench", "--inprocess", str(rows_file),
                             "--calls", str(calls), "--rounds", str(rounds)],
                            env=env, cwd=code, timeout=900)
    data = json.loads(out.strip().splitlines()[-1])
    figures = {}
    for name, by_n in data["rounds"].items():
        figures[name] = {n: {k: rnd(median([r[k] for r in runs]), 4)
                             for k in ("p50_ms", "p99_ms", "mean_ms")}
                         for n, runs in by_n.items()}
    return {"calls_per_round": calls, "rounds": rounds, "figures": figures,
            "agree": data["agree"], "runtime": data["runtime"], "what_if": data["what_if"]}


def _inprocess_main(rows_file: Path, calls: int, rounds: int) -> None:
    """The child of `inprocess` (cwd and PYTHONPATH: the deployed version's tree)."""
    import importlib
    import importlib.util

    import bentoml

    from mlstack.runtime import scoring, serving

    rows = json.loads(rows_file.read_text())
    service_module = importlib.import_module("service.service")
    service_class = next(v for v in vars(service_module).values()
                         if isinstance(v, bentoml.Service))
    generated = service_class()
    Ranking = service_module.Ranking
    spec = importlib.util.spec_from_file_location("bench_expert_rank_service",
                                                  EXPERT / "expert_rank_service.py")
    expert = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = expert
    spec.loader.exec_module(expert)

    def batches(n: int) -> list[list[dict]]:
        """Windows of n consecutive rows (one query's candidates up to 20, else several)."""
        if n <= REQUEST_CANDIDATES:
            starts = range(0, len(rows) - REQUEST_CANDIDATES + 1, REQUEST_CANDIDATES)
        else:
            starts = range(0, len(rows) - n + 1, REQUEST_CANDIDATES)
        return [rows[s:s + n] for s in starts]

    def gen_rank(batch):
        values, _inputs = serving.unzip_served(generated.served_rows(batch))
        keys = [{"doc_id": r["doc_id"]} for r in batch]
        answer = Ranking.model_validate({"query_id": batch[0]["query_id"],
                                         "ranked": serving.ranked(keys, values, TOP_K)})
        return answer.model_dump_json(by_alias=True)

    def exp_score(batch):
        return expert.score_pairs([r["query_id"] for r in batch], [r["doc_id"] for r in batch])

    def exp_rank(batch):
        doc_ids = [r["doc_id"] for r in batch]
        scores = expert.score_pairs([r["query_id"] for r in batch], doc_ids)
        return expert.ranking(batch[0]["query_id"], doc_ids, scores, TOP_K)

    by_n = {n: batches(n) for n in CANDIDATES}
    matrices = {n: [generated.inputs(b).matrix for b in bs[:8]] for n, bs in by_n.items()}
    cases = {
        "model_onnx": lambda n: (generated.model.score, matrices[n]),
        "generated_inputs": lambda n: (generated.inputs, by_n[n]),
        "generated_score": lambda n: (generated.served_rows, by_n[n]),
        "generated_rank": lambda n: (gen_rank, by_n[n]),
        "expert_score": lambda n: (exp_score, by_n[n]),
        "expert_rank": lambda n: (exp_rank, by_n[n]),
    }
    # what-if: the generated path on mlstack's direct SQLite read, where the service itself
    # fell back to Feast (its check samples keys of the first view only)
    access = importlib.import_module(
        service_module.settings.__name__.rsplit(".", 1)[0] + ".store").STORE
    read_path = access.online_read_path()
    direct = _direct_read_what_if(access, rows) if access._direct_read is None else None
    what_if = {"service_read_path": read_path,
               "direct_read_equals_feast": direct is not None}
    if direct is not None:
        def on_direct(call):
            def run(batch):
                access._direct_read = direct
                try:
                    return call(batch)
                finally:
                    access._direct_read = None
            return run
        cases["generated_score_direct_what_if"] = lambda n: (on_direct(generated.served_rows),
                                                             by_n[n])
        cases["generated_rank_direct_what_if"] = lambda n: (on_direct(gen_rank), by_n[n])
    # the same scores and order on every 20-candidate batch (ONNX: within its tolerance)
    agree, scored = True, 0
    for batch in by_n[REQUEST_CANDIDATES]:
        a = generated.predict_rows(batch)
        b = exp_score(batch)
        scored += sum(x is not None for x in a)
        agree = agree and all((x is None and y is None) or (
            x is not None and y is not None
            and abs(x - y) <= scoring.PARITY_TOLERANCE * max(1.0, abs(x)))
            for x, y in zip(a, b, strict=True))
        agree = agree and json.loads(gen_rank(batch)) == json.loads(exp_rank(batch))
    results = {name: {str(n): [] for n in CANDIDATES} for name in cases}
    for case in cases.values():  # warm every path once
        for n in CANDIDATES:
            _timings(*case(n), 20)
    for _ in range(rounds):  # rounds interleave the cases: background load hits all
        for n in CANDIDATES:
            for name, case in cases.items():
                results[name][str(n)].append(_summary(_timings(*case(n), calls)))
    print(json.dumps({"rounds": results, "runtime": generated.model.info(), "what_if": what_if,
                      "agree": {"same_scores_and_answers_20": agree,
                                "batches_20": len(by_n[REQUEST_CANDIDATES]),
                                "scored_candidates_20": scored}}))


def _direct_read_what_if(access, rows: list[dict]):
    """mlstack's direct read of the SQLite online store, when it answers exactly as Feast
    does on every fresh key of the run and one unknown key; else None."""
    from mlstack.runtime.online_read import SqliteOnlineRead

    read = SqliteOnlineRead.prepare(access.get_store(), access.feature_service(),
                                    access.request_keys)
    if read is None:
        return None
    keys = list(dict.fromkeys(tuple(r[k] for k in access.request_keys) for r in rows))
    keys.append(tuple(-1 for _ in access.request_keys))
    return read if read(keys) == access._feast_read(keys, with_times=True) else None


# --- 2. over HTTP -------------------------------------------------------------------------

def start_services(dep: Deployment, workdir: Path, procs: Processes) -> dict:
    code, tag = version_dir(dep), dep.model_tag
    gen = _start(dep, procs, workdir, "generated", code, tag,
                 ["-m", "bentoml", "serve", service_target(code)], {}, workers=2)
    info = httpx.post(f"{gen['url']}/info", json={}, timeout=30).json()
    gen.update(server="BentoML (uvicorn, Starlette), 2 workers", runtime=info["runtime"],
               batching={k: info["batching"][k] for k in
                         ("enabled", "max_batch_size", "max_latency_ms", "source")},
               online_read=info.get("online_read"),
               prediction_log="on (each answer queued for the writer thread)")
    exp = _start(dep, procs, workdir, "expert", EXPERT, tag, EXPERT_ARGS, {}, env_dir=code,
                 workers=EXPERT_WORKERS, ready_line="Application startup complete")
    exp.update(server=f"FastAPI on uvicorn (uvloop, httptools, no access log), "
                      f"{EXPERT_WORKERS} workers",
               runtime="onnx (onnxmltools export, ONNX Runtime, 1 thread)",
               batching={"enabled": False}, online_read="feast get_online_features",
               prediction_log="none")
    return {"generated": gen, "expert": exp}


def agree_http(services: dict, bodies: list[dict]) -> dict:
    answers = {}
    with httpx.Client(timeout=30) as client:
        for name, svc in services.items():
            answers[name] = [client.post(f"{svc['url']}/rank", json=b).json() for b in bodies]
    same, scored = True, 0
    for g, e in zip(answers["generated"], answers["expert"], strict=True):
        same = same and g["query_id"] == e["query_id"] and \
            [c["doc_id"] for c in g["ranked"]] == [c["doc_id"] for c in e["ranked"]] and \
            all((a["score"] is None) == (b["score"] is None) and (
                a["score"] is None or abs(a["score"] - b["score"]) <= 1e-5)
                for a, b in zip(g["ranked"], e["ranked"], strict=True))
        scored += sum(c["score"] is not None for c in g["ranked"])
    return {"same_order_and_scores": same, "bodies": len(bodies),
            "scored_in_top_k": scored, "answered_in_top_k": sum(
                len(g["ranked"]) for g in answers["generated"])}


def _closed_run(svc: dict, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    before = tree_cpu_seconds(svc["pid"])
    out = closed_loop(f"{svc['url']}/rank", bodies, concurrency=concurrency, duration=seconds)
    cpu = tree_cpu_seconds(svc["pid"]) - before
    answered = out["requests"] - out["errors"]
    return {"rps": rnd(out["throughput_rps"], 1), "p50_ms": rnd(out["p50_ms"], 2),
            "p99_ms": rnd(out["p99_ms"], 2), "errors": out["errors"],
            "statuses": out["statuses"],
            "cpu_ms_per_request": rnd(cpu * 1000 / answered, 3) if answered else None,
            "load_1min": load_average()[0]}


def _open_run(svc: dict, bodies: list[dict], rate: float, seconds: float) -> dict:
    out = open_loop(f"{svc['url']}/rank", bodies, rate=rate, duration=seconds,
                    max_in_flight=64)
    return {"requests": out["requests"], "errors": out["errors"],
            "statuses": out["statuses"], "rps": rnd(out["throughput_rps"], 1),
            **{f"{q}_ms": rnd(out[f"{q}_ms"], 2) for q in ("p50", "p95", "p99")},
            "load_1min": load_average()[0]}


def http_runs(services: dict, bodies: list[dict], slos: dict, rounds: int, seconds: float,
              slo_seconds: float) -> dict:
    for svc in services.values():
        warm_up(f"{svc['url']}/rank", bodies, 200)
    load_before = load_average()
    rate = float(slos["throughput_rps"])
    slo_runs = {name: [] for name in services}
    for _ in range(rounds):
        for name, svc in services.items():
            slo_runs[name].append(_open_run(svc, bodies, rate, slo_seconds))
            time.sleep(0.5)
    closed = {name: {str(c): [] for c in CONCURRENCY} for name in services}
    for c in CONCURRENCY:
        for _ in range(rounds):
            for name, svc in services.items():
                closed[name][str(c)].append(_closed_run(svc, bodies, c, seconds))
                time.sleep(0.3)
    return {"load_before": load_before, "rate_rps": rate, "open_loop": slo_runs,
            "closed_loop": closed}


# --- summary ------------------------------------------------------------------------------

def summarize(inproc: dict, http: dict, slos: dict) -> dict:
    f = inproc["figures"]
    per_n = {}
    for n in map(str, CANDIDATES):
        row = {name: f[name][n] for name in f}
        row["generated_vs_expert_rank_p50"] = rnd(ratio(f["generated_rank"][n]["p50_ms"],
                                                        f["expert_rank"][n]["p50_ms"]), 2)
        row["generated_vs_expert_score_p50"] = rnd(ratio(f["generated_score"][n]["p50_ms"],
                                                         f["expert_score"][n]["p50_ms"]), 2)
        if "generated_rank_direct_what_if" in f:
            row["generated_direct_what_if_vs_expert_rank_p50"] = rnd(ratio(
                f["generated_rank_direct_what_if"][n]["p50_ms"], f["expert_rank"][n]["p50_ms"]), 2)
        per_n[n] = row
    p99_goal = float(slos["latency"]["p99_ms"])
    slo = {}
    for name, runs in http["open_loop"].items():
        requests = sum(r["requests"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        slo[name] = {
            **{f"{q}_ms": rnd(median([r[f"{q}_ms"] for r in runs]), 2)
               for q in ("p50", "p95", "p99")},
            "p99_runs_ms": [r["p99_ms"] for r in runs],
            "requests": requests, "errors": errors,
            "rounds_meeting_p99": sum(r["p99_ms"] is not None and r["p99_ms"] <= p99_goal
                                      and r["errors"] == 0 for r in runs),
            "loads": [r["load_1min"] for r in runs]}
        slo[name]["p99_goal_met"] = (slo[name]["p99_ms"] is not None
                                     and slo[name]["p99_ms"] <= p99_goal and errors == 0)
    closed = {}
    for c in map(str, CONCURRENCY):
        row = {}
        for name, by_c in http["closed_loop"].items():
            runs = by_c[c]
            row[name] = {"rps": median([r["rps"] for r in runs]),
                         "rps_runs": [r["rps"] for r in runs],
                         "p50_ms": median([r["p50_ms"] for r in runs]),
                         "p99_ms": median([r["p99_ms"] for r in runs]),
                         "cpu_ms_per_request": median([r["cpu_ms_per_request"] for r in runs]),
                         "errors": sum(r["errors"] for r in runs),
                         "loads": [r["load_1min"] for r in runs]}
        row["generated_vs_expert_rps"] = rnd(ratio(row["generated"]["rps"],
                                                   row["expert"]["rps"]), 2)
        row["generated_vs_expert_cpu"] = rnd(ratio(row["generated"]["cpu_ms_per_request"],
                                                   row["expert"]["cpu_ms_per_request"]), 2)
        closed[c] = row
    return {"in_process_by_candidates": per_n, "in_process_what_if": inproc["what_if"],
            "open_loop_slo": {"rate_rps": http["rate_rps"], "p99_goal_ms": p99_goal,
                              "load_before": http["load_before"], **slo},
            "closed_loop": closed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--slo-seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--inprocess", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inprocess is not None:
        _inprocess_main(args.inprocess, args.calls, args.rounds)
        return
    if args.root is None:
        parser.error("--root is required")
    began = time.perf_counter()
    root = args.root.resolve()
    procs = Processes()
    dep, deployed = deployment(root)
    workdir = root / "rank-bench"
    shutil.rmtree(workdir, ignore_errors=True)  # this bench's own files, from a last run
    workdir.mkdir(parents=True)
    try:
        dep.down(procs)  # its version and router: the bench starts its own services
        import yaml

        slos = yaml.safe_load((dep.project / "mlstack.yaml").read_text())["slos"]
        rows = fresh_rows(dep)
        bodies = rank_bodies(rows)
        if not bodies or any(len(b["candidates"]) != REQUEST_CANDIDATES for b in bodies):
            raise RuntimeError(f"expected fresh queries of {REQUEST_CANDIDATES} candidates")
        inproc = inprocess(dep, workdir, rows, args.calls, args.rounds)
        services = start_services(dep, workdir, procs)
        agree = agree_http(services, bodies)
        http = http_runs(services, bodies, slos, args.rounds, args.seconds, args.slo_seconds)
        for svc in services.values():
            procs.stop(svc["pid"])
    finally:
        procs.stop_all()
        dep.down(procs)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                 capture_output=True, text=True).stdout.strip(),
        "deployed_now": deployed, "model_tag": dep.model_tag,
        "fresh_queries": len(bodies), "candidates_per_request": REQUEST_CANDIDATES,
        "top_k": TOP_K, "rounds": args.rounds, "closed_seconds": args.seconds,
        "open_seconds": args.slo_seconds,
        "services": {name: {k: v for k, v in svc.items() if k not in ("pid", "url")}
                     for name, svc in services.items()},
        "in_process": inproc, "http_agree": agree,
        "summary": summarize(inproc, http, slos), "runs": http,
        "bench_seconds": rnd(time.perf_counter() - began, 1),
    }
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result["summary"], indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
