"""Section 3: the generated BentoML service (the deployed tree, the flow-trained model) vs a
hand-written minimal BentoML service (bench/handwritten/service.py) serving the same model
from the same feature store, and vs in-process `model.predict_proba` (the ceiling).

Services, all started with `bentoml serve` on loopback, with deploy's environment:
- generated: batching as mlstack derived it from the spec's SLO;
- generated, batching off: the spec compiled again with `serving.batching: off`;
- hand-written, batching tuned by hand (HAND_TUNED, chosen by a sweep; see results.md);
- hand-written with the generated service's batching settings (isolates the code's cost).
Closed-loop load at concurrency 1, 16, 64 (one entity per request), repetitions interleaved
across services so background load hits all alike; then an open-loop run at the spec's
throughput target against the generated service to check its latency SLOs.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import yaml

from bench.common import MLSTACK, PYTHON, REPO, free_port, median, ratio, rnd, timed_run
from bench.common import wait_http_ready as wait_ready
from bench.loadgen import closed_loop, open_loop, warm_up
from bench.workspace import service_target

HANDWRITTEN = REPO / "bench" / "handwritten"
# hand-tuned for throughput at concurrency 16-64 on this 2-core machine (sweep in results.md)
HAND_TUNED = {"max_batch_size": 64, "max_latency_ms": 1000}
CONCURRENCY = (1, 16, 64)
READY_TIMEOUT = 300.0
FRESH_CHECKED = ("generated", "generated_batching_off")
AFTER_CHECKED = ("generated", "generated_batching_off", "handwritten_same_batching")
RECOVERY_IDLE_S = 30.0


def batching_off_tree(deployment, workdir: Path) -> Path:
    """The project's spec with `serving.batching: off`, compiled next to the deployed tree."""
    spec = yaml.safe_load((deployment.project / "mlstack.yaml").read_text())
    spec["serving"]["batching"] = "off"
    variant = deployment.project / "mlstack-batching-off.yaml"
    variant.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = workdir / "build-batching-off"
    timed_run([MLSTACK, "compile", str(variant), "-o", str(out)], env=deployment.env,
              cwd=deployment.project)
    return out


def start_services(deployment, workdir: Path, procs) -> dict[str, dict]:
    tag = deployment.model_tag
    build = deployment.build_dir
    off = batching_off_tree(deployment, workdir)
    info = {}
    specs = {
        "generated": (build, service_target(build), {}),
        "generated_batching_off": (off, service_target(off), {}),
    }
    services = {}
    for name, (code_dir, target, extra) in specs.items():
        services[name] = _start(deployment, procs, workdir, name, code_dir, target, tag, extra)
    derived = httpx.post(f"{services['generated']['url']}/info", json={},
                         timeout=30).json()["batching"]
    info["derived_batching"] = derived
    hand = {
        "handwritten_tuned": HAND_TUNED,
        "handwritten_same_batching": {"max_batch_size": derived["max_batch_size"],
                                      "max_latency_ms": derived["max_latency_ms"]},
    }
    for name, batching in hand.items():
        extra = {"BENCH_MAX_BATCH_SIZE": str(batching["max_batch_size"]),
                 "BENCH_MAX_LATENCY_MS": str(batching["max_latency_ms"])}
        services[name] = _start(deployment, procs, workdir, name, HANDWRITTEN,
                                "handwritten_service:HandWrittenChurn", tag, extra)
        services[name]["batching"] = batching
    services["generated"]["batching"] = derived
    services["generated_batching_off"]["batching"] = httpx.post(
        f"{services['generated_batching_off']['url']}/info", json={}, timeout=30
    ).json()["batching"]
    return services


def _start(deployment, procs, workdir, name, code_dir, target, tag, extra) -> dict:
    port = free_port()
    log = workdir / "logs" / f"{name}.log"
    env = deployment.runtime_env(code_dir, MLSTACK_MODEL_TAG=tag, **extra)
    began = time.perf_counter()
    pid = procs.start([PYTHON, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
                       "--port", str(port)], cwd=code_dir, env=env, log=log)
    wait_ready(f"http://127.0.0.1:{port}/readyz", pid, procs, READY_TIMEOUT, log)
    return {"url": f"http://127.0.0.1:{port}", "pid": pid,
            "start_to_ready_s": rnd(time.perf_counter() - began, 2)}


def _agree(services: dict, bodies: list[dict]) -> bool:
    """Every service gives the same predictions for the same rows (the same job done)."""
    answers = {}
    with httpx.Client(timeout=30) as client:
        for name, svc in services.items():
            answers[name] = [client.post(f"{svc['url']}/predict", json=b).json()[0]
                             for b in bodies]
    first = next(iter(answers.values()))
    return all(all((a is None and b is None) or (a is not None and b is not None
                                                 and abs(a - b) < 1e-9)
                   for a, b in zip(first, other, strict=True))
               for other in answers.values())


def run(deployment, workdir: Path, procs, bodies: list[dict], inprocess: dict,
        reps: int = 3, duration: float = 4.0, slo_duration: float = 5.0) -> dict:
    """Order: warm-up; the SLO check on the fresh services (as deploy's verification sees
    them); closed-loop runs by rising concurrency (repetitions interleaved across services);
    the SLO check again, after the load."""
    services = start_services(deployment, workdir, procs)
    system = deployment_slos(deployment)
    try:
        agree = _agree(services, bodies[:20])
        for svc in services.values():
            warm_up(f"{svc['url']}/predict", bodies)
        slo_fresh = _slo_runs(services, FRESH_CHECKED, bodies, system, reps, slo_duration)
        raw: dict = {name: {c: [] for c in CONCURRENCY} for name in services}
        for c in CONCURRENCY:
            for _ in range(reps):
                for name, svc in services.items():
                    raw[name][c].append(closed_loop(f"{svc['url']}/predict", bodies,
                                                    concurrency=c, duration=duration))
        slo_after = _slo_runs(services, AFTER_CHECKED, bodies, system, reps, slo_duration)
        time.sleep(RECOVERY_IDLE_S)  # does an idle spell let the batcher recover?
        slo_idle = _slo_runs(services, AFTER_CHECKED, bodies, system, 1, slo_duration)
    finally:
        for svc in services.values():
            procs.stop(svc["pid"])
    return summarize(services, raw, {"fresh": slo_fresh, "after_load": slo_after,
                                     "after_idle": slo_idle}, system, inprocess, agree, reps,
                     duration)


def _slo_runs(services, names, bodies, system, reps, duration) -> dict[str, list[dict]]:
    runs = {name: [] for name in names}
    for _ in range(reps):
        for name in runs:
            runs[name].append(open_loop(f"{services[name]['url']}/predict", bodies,
                                        rate=system["throughput_rps"], duration=duration,
                                        max_in_flight=64))
    return runs


def deployment_slos(deployment) -> dict:
    spec = yaml.safe_load((deployment.project / "mlstack.yaml").read_text())
    slos = spec.get("slos", {})
    return {"throughput_rps": float(slos.get("throughput_rps") or 20),
            "latency": slos.get("latency", {})}


def _med(runs: list[dict]) -> dict:
    out = {k: rnd(median([r[k] for r in runs]), 2)
           for k in ("throughput_rps", "p50_ms", "p95_ms", "p99_ms")}
    requests = sum(r["requests"] for r in runs)
    out["error_rate"] = rnd(sum(r["errors"] for r in runs) / requests if requests else 0.0, 4)
    out["runs_rps"] = [rnd(r["throughput_rps"], 1) for r in runs]
    return out


def summarize(services, raw, slo_runs, system, inprocess, agree, reps, duration) -> dict:
    table = {name: {str(c): _med(runs) for c, runs in by_c.items()}
             for name, by_c in raw.items()}
    f = inprocess["figures"]
    ceiling = {
        "model_predict_proba_1_row": f["model_predict_proba_1"],
        "model_predict_proba_32_rows": f["model_predict_proba_32"],
        "rows_per_s_1_row_calls": rnd(1000 / f["model_predict_proba_1"]["p50_ms"], 1),
        "rows_per_s_32_row_calls": rnd(32 * 1000 / f["model_predict_proba_32"]["p50_ms"], 1),
        "generated_predict_in_process_1_row": f["generated_predict_1"],
        "handwritten_predict_in_process_1_row": f["handwritten_predict_1"],
        "generated_predict_in_process_32_rows": f["generated_predict_32"],
        "handwritten_predict_in_process_32_rows": f["handwritten_predict_32"],
    }
    ratios = {}
    for c in map(str, CONCURRENCY):
        gen = table["generated"][c]["throughput_rps"]
        ratios[c] = {
            "generated_vs_handwritten_tuned": rnd(ratio(gen, table["handwritten_tuned"][c]
                                                        ["throughput_rps"]), 2),
            "generated_vs_handwritten_same_batching": rnd(ratio(
                gen, table["handwritten_same_batching"][c]["throughput_rps"]), 2),
            "generated_vs_batching_off": rnd(ratio(gen, table["generated_batching_off"][c]
                                                   ["throughput_rps"]), 2),
            "generated_vs_ceiling_32_row_calls": rnd(ratio(
                gen, ceiling["rows_per_s_32_row_calls"]), 3),
        }
    latency = system["latency"]
    slo: dict = {}
    for regime, by_service in slo_runs.items():
        for name, runs in by_service.items():
            m = _med(runs)
            checks = {q: {"measured_ms": m[f"{q}_ms"], "slo_ms": latency.get(f"{q}_ms"),
                          "met": latency.get(f"{q}_ms") is None or (
                              m[f"{q}_ms"] is not None and m[f"{q}_ms"] <= latency[f"{q}_ms"])}
                      for q in ("p50", "p95", "p99")}
            slo.setdefault(regime, {})[name] = {"rate_rps": system["throughput_rps"], **m,
                                                "checks": checks}
    goals = {
        "generated >= 1.0x hand-written (tuned) throughput at every concurrency": all(
            (r["generated_vs_handwritten_tuned"] or 0) >= 1.0 for r in ratios.values()),
        "generated >= 3x its batching-off throughput at concurrency 64": (
            ratios["64"]["generated_vs_batching_off"] or 0) >= 3.0,
        "generated p99 within the SLO at the spec's throughput target": slo["fresh"][
            "generated"]["checks"]["p99"]["met"] and slo["fresh"]["generated"]["error_rate"] == 0,
    }
    return {
        "reps": reps, "duration_s": duration,
        "services": {name: {k: v for k, v in svc.items() if k not in ("pid", "url")}
                     for name, svc in services.items()},
        "predictions_agree": agree,
        "closed_loop": table,
        "ratios": ratios,
        "ceiling_in_process": ceiling,
        "slo_check_open_loop": slo,
        "goals": goals,
        "goal_met": all(goals.values()),
    }
