"""Section 3: the generated BentoML service (the deployed version: its measured serving
profile, the flow-trained model on ONNX Runtime) against the service an expert writes by hand
(bench/expert/: FastAPI on uvicorn with uvloop and httptools, 2 workers, Feast with the cached
feature service, the same model on ONNX Runtime with 1 thread), and vs in-process calls.

Services, each on loopback with deploy's environment:
- generated: the deployed version's folder as it runs (`bentoml serve`, 2 workers; batching as
  the deploy's profile stage measured and derived it; the model on ONNX Runtime);
- generated, Feast read: the same, reading online features through Feast's
  get_online_features (MLSTACK_ONLINE_READ=feast), to measure the direct read;
- generated, before issue 20: the same tree with /predict returning its list for BentoML to
  validate and serialise, BentoML's access log on, and the Feast read: the service as it was,
  to measure the ready answer with the access log off (against the Feast-read row) and all
  the changes together;
- expert: `uvicorn expert_service:app --workers 2 --loop uvloop --http httptools
  --no-access-log` (bench/expert/expert_service.py);
- naive: the bench's first hand-written baseline (bench/handwritten/: BentoML, 1 worker,
  scikit-learn, a pandas frame per call, BentoML's batcher with a 1000 ms wait).
Closed-loop load at concurrency 1, 16, 64 (one entity per request, keep-alive, the ids in a
shuffled order), repetitions interleaved across services so background load hits all alike;
the CPU seconds of each service's process tree and the 1-minute load average are taken around
every run. Open-loop runs at the spec's throughput target: fresh, after the closed-loop load,
right after a burst of 20x that rate for 20 s (per second, to see when the SLOs hold again),
and after 30 s without traffic.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import psutil
import yaml

from bench.common import MLSTACK, PYTHON, REPO, free_port, median, ratio, rnd, timed_run
from bench.common import wait_http_ready as wait_ready
from bench.loadgen import closed_loop, open_loop, open_loop_windows, warm_up
from bench.workspace import service_target
from mlstack.runtime.store import ONLINE_READ_ENV

HANDWRITTEN = REPO / "bench" / "handwritten"
EXPERT = REPO / "bench" / "expert"
EXPERT_WORKERS = 2  # as the generated service's (its spec's serving cpu)
# the naive baseline's batching, hand-tuned for it on this 2-core machine (results.md)
HAND_TUNED = {"max_batch_size": 64, "max_latency_ms": 1000}
CONCURRENCY = (1, 16, 64)
READY_TIMEOUT = 300.0
PROFILE_FILE = "serving_profile.json"
FRESH_CHECKED = ("generated", "expert")
AFTER_CHECKED = ("generated", "expert")
# the template before issue 20: /predict's list validated and serialised by BentoML
READY_ANSWER = re.compile(r"return Response\(\s*serving\.json_body\((await self\.scores\(rows\))"
                          r"\),\s*media_type=http_contract\.JSON\s*\)")
NO_ACCESS_LOG = re.compile(r'\n *logging=\{"access": \{"enabled": False\}\},')
RECOVERY_IDLE_S = 30.0
BURST_FACTOR, BURST_S, RECOVERY_S, RECOVER_WITHIN_S = 20, 20.0, 10.0, 10.0
BURST_IN_FLIGHT = 256


def version_dir(deployment) -> Path:
    """The deployed version's own copy of the generated tree (with its serving profile)."""
    state = deployment.state
    return deployment.project / ".mlstack" / "versions" / state["current"]


def _variant(deployment, workdir: Path, name: str, edit_spec=None, edit_profile=None,
             edit_service=None) -> Path:
    """The deployed version's tree, recompiled from an edited spec (when `edit_spec`) or
    copied, with its serving profile (edited by `edit_profile`) and its service module
    (edited by `edit_service`, text to text)."""
    source = version_dir(deployment)
    out = workdir / name
    if edit_spec is not None:
        spec = yaml.safe_load((deployment.project / "mlstack.yaml").read_text())
        edit_spec(spec)
        variant = deployment.project / f"mlstack-{name}.yaml"
        variant.write_text(yaml.safe_dump(spec, sort_keys=False))
        timed_run([MLSTACK, "compile", str(variant), "-o", str(out)], env=deployment.env,
                  cwd=deployment.project)
    else:
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("__pycache__"))
    profile = json.loads((source / PROFILE_FILE).read_text())
    if edit_profile is not None:
        edit_profile(profile)
    (out / PROFILE_FILE).write_text(json.dumps(profile))
    if edit_service is not None:
        module = out / "service" / "service.py"
        module.write_text(edit_service(module.read_text()))
    return out


def _before_issue_20(source: str) -> str:
    """The service module as the template wrote it before issue 20: /predict's list for
    BentoML to validate and serialise, and BentoML's access log line per request."""
    edited, count = READY_ANSWER.subn(r"return \1", source)
    edited, logs = NO_ACCESS_LOG.subn("", edited)
    if count != 1 or logs != 1:
        raise RuntimeError("the generated service changed; update bench/s3_serving's "
                           "READY_ANSWER and NO_ACCESS_LOG")
    return edited


def _batching_on(profile: dict) -> None:
    cost = float(profile["measured"]["call_ms"]["32"])
    latency = int(profile["p99_ms"] - profile["http_ms_assumed"] - 2 * cost)
    profile["batching"] = {"enabled": True, "max_batch_size": 32, "max_latency_ms": latency}


def _native(spec: dict) -> None:
    spec["serving"]["runtime"] = "native"


def start_services(deployment, workdir: Path, procs) -> dict[str, dict]:
    tag = deployment.model_tag
    deployed = version_dir(deployment)
    through_feast = {ONLINE_READ_ENV: "feast"}
    specs = {
        "generated": (deployed, {}),
        "generated_feast_read": (deployed, through_feast),
        "generated_before": (_variant(deployment, workdir, "bentoml-answer",
                                      edit_service=_before_issue_20), through_feast),
    }
    services = {}
    for name, (code_dir, extra) in specs.items():
        services[name] = _start(deployment, procs, workdir, name, code_dir, tag, [
            "-m", "bentoml", "serve", service_target(code_dir)], extra, workers=2)
        info = httpx.post(f"{services[name]['url']}/info", json={}, timeout=30).json()
        services[name]["batching"] = {k: info["batching"][k] for k in
                                      ("enabled", "max_batch_size", "max_latency_ms", "source")}
        services[name]["runtime"] = info["runtime"]["runtime"]
        services[name]["runtime_reason"] = info["runtime"]["reason"]
        services[name]["online_read"] = info.get("online_read", {}).get("path", "feast")
        services[name]["server"] = "BentoML (uvicorn, Starlette), 2 workers"
    services["expert"] = _start(
        deployment, procs, workdir, "expert", EXPERT, tag,
        ["-m", "uvicorn", "expert_service:app", "--workers", str(EXPERT_WORKERS), "--loop",
         "uvloop", "--http", "httptools", "--no-access-log"], {},
        env_dir=deployed, workers=EXPERT_WORKERS, ready_line="Application startup complete")
    services["expert"].update(batching={"enabled": False, "source": "none"}, runtime="onnx",
                              online_read="feast",
                              server=f"FastAPI on uvicorn (uvloop, httptools), "
                                     f"{EXPERT_WORKERS} workers")
    extra = {"BENCH_MAX_BATCH_SIZE": str(HAND_TUNED["max_batch_size"]),
             "BENCH_MAX_LATENCY_MS": str(HAND_TUNED["max_latency_ms"])}
    services["naive"] = _start(deployment, procs, workdir, "naive", HANDWRITTEN, tag, [
        "-m", "bentoml", "serve", "handwritten_service:HandWrittenChurn"], extra,
        env_dir=deployed, workers=1)
    services["naive"].update(batching={"enabled": True, **HAND_TUNED, "source": "BentoML"},
                             runtime="native", server="BentoML, 1 worker", online_read="feast")
    return services


def _start(deployment, procs, workdir, name, code_dir, tag, args, extra, *, env_dir=None,
           workers: int = 1, ready_line: str | None = None) -> dict:
    port = free_port()
    log = workdir / "logs" / f"{name}.log"
    env = deployment.runtime_env(env_dir or code_dir, MLSTACK_MODEL_TAG=tag, **extra)
    began = time.perf_counter()
    pid = procs.start([PYTHON, *args, "--host", "127.0.0.1", "--port", str(port)],
                      cwd=code_dir, env=env, log=log)
    wait_ready(f"http://127.0.0.1:{port}/readyz", pid, procs, READY_TIMEOUT, log)
    if ready_line is not None:  # every worker, not the first one
        deadline = time.monotonic() + READY_TIMEOUT
        while log.read_text(errors="replace").count(ready_line) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: fewer than {workers} workers ready; see {log}")
            time.sleep(0.25)
    return {"url": f"http://127.0.0.1:{port}", "pid": pid, "workers": workers,
            "start_to_ready_s": rnd(time.perf_counter() - began, 2)}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its living descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def _measured_run(svc: dict, bodies: list[dict], concurrency: int, duration: float) -> dict:
    """One closed-loop run, with the CPU seconds the service's process tree spent in it and
    the load average after it."""
    before = tree_cpu_seconds(svc["pid"])
    out = closed_loop(f"{svc['url']}/predict", bodies, concurrency=concurrency,
                      duration=duration)
    cpu = tree_cpu_seconds(svc["pid"]) - before
    answered = out["requests"] - out["errors"]
    out["cpu_s"] = cpu
    out["cpu_ms_per_request"] = cpu * 1000 / answered if answered else None
    out["load_1min"] = os.getloadavg()[0]
    return out


def _agree(services: dict, bodies: list[dict], tolerance: float = 1e-5) -> bool:
    """Every service gives the same predictions for the same rows (ONNX Runtime: within the
    registration's parity tolerance)."""
    answers = {}
    with httpx.Client(timeout=30) as client:
        for name, svc in services.items():
            answers[name] = [client.post(f"{svc['url']}/predict", json=b).json()[0]
                             for b in bodies]
    first = next(iter(answers.values()))
    return all(all((a is None and b is None) or (a is not None and b is not None
                                                 and abs(a - b) <= tolerance)
                   for a, b in zip(first, other, strict=True))
               for other in answers.values())


def run(deployment, workdir: Path, procs, bodies: list[dict], inprocess: dict,
        reps: int = 3, duration: float = 4.0, slo_duration: float = 5.0) -> dict:
    """Order: warm-up; the SLO check on the fresh services (as deploy's verification sees
    them); closed-loop runs by rising concurrency (repetitions interleaved across services);
    the SLO check after the load; a burst per service and the SLO check right after it, per
    second; 30 s without traffic, and the SLO check once more."""
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
                    raw[name][c].append(_measured_run(svc, bodies, c, duration))
        slo_after = _slo_runs(services, AFTER_CHECKED, bodies, system, reps, slo_duration)
        bursts = {name: _burst_and_recover(services[name], bodies, system)
                  for name in ("generated",)}
        time.sleep(RECOVERY_IDLE_S)  # does an idle spell let a batcher recover?
        slo_idle = _slo_runs(services, AFTER_CHECKED, bodies, system, 1, slo_duration)
    finally:
        for svc in services.values():
            procs.stop(svc["pid"])
    return summarize(services, raw, {"fresh": slo_fresh, "after_load": slo_after,
                                     "after_idle": slo_idle}, bursts, system, inprocess,
                     agree, reps, duration)


def _burst_and_recover(svc: dict, bodies: list[dict], system: dict) -> dict:
    """20x the spec's rate for 20 s, then the spec's rate for 10 s, per second."""
    url, rate = f"{svc['url']}/predict", system["throughput_rps"]
    burst = open_loop(url, bodies, rate=rate * BURST_FACTOR, duration=BURST_S,
                      max_in_flight=BURST_IN_FLIGHT)
    after = open_loop_windows(url, bodies, rate=rate, duration=RECOVERY_S, max_in_flight=64)
    latency = system["latency"]

    def meets(w: dict) -> bool:
        return (w["errors"] == 0 and w["p50_ms"] is not None
                and all(w[f"{q}_ms"] <= latency[f"{q}_ms"] for q in ("p50", "p95")
                        if latency.get(f"{q}_ms")))

    windows = after.pop("windows")
    recovered = next((i for i in range(len(windows)) if all(meets(w) for w in windows[i:])),
                     None)
    return {"burst": {k: burst[k] for k in ("requests", "errors", "throughput_rps",
                                            "p50_ms", "p99_ms")},
            "after": {k: rnd(v, 2) if isinstance(v, float) else v for k, v in after.items()},
            "windows": [{k: rnd(v, 1) if isinstance(v, float) else v for k, v in w.items()}
                        for w in windows],
            "recovered_after_s": recovered,
            "recovered_within_10_s": recovered is not None and recovered < RECOVER_WITHIN_S}


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
    if all("cpu_s" in r for r in runs):
        answered = sum(r["requests"] - r["errors"] for r in runs)
        out["cpu_ms_per_request"] = rnd(sum(r["cpu_s"] for r in runs) * 1000 / answered
                                        if answered else None, 3)
        out["load_1min"] = [rnd(r["load_1min"], 2) for r in runs]
    return out


def _checks(m: dict, latency: dict) -> dict:
    return {q: {"measured_ms": m[f"{q}_ms"], "slo_ms": latency.get(f"{q}_ms"),
                "met": latency.get(f"{q}_ms") is None or (
                    m[f"{q}_ms"] is not None and m[f"{q}_ms"] <= latency[f"{q}_ms"])}
            for q in ("p50", "p95", "p99")}


def summarize(services, raw, slo_runs, bursts, system, inprocess, agree, reps,
              duration) -> dict:
    table = {name: {str(c): _med(runs) for c, runs in by_c.items()}
             for name, by_c in raw.items()}
    f = inprocess["figures"]
    ceiling = {key: f[key] for key in (
        "model_predict_proba_1", "model_predict_proba_32", "onnx_score_1", "onnx_score_32",
        "generated_predict_1", "generated_predict_native_1", "handwritten_predict_1",
        "expert_predict_1", "generated_predict_32", "generated_predict_native_32",
        "handwritten_predict_32", "expert_predict_32", "online_read_feast_1",
        "online_read_direct_1", "online_read_feast_32", "online_read_direct_32",
        "service_model_input_1", "service_model_input_32", "feast_raw_1") if key in f}
    ratios = {}
    for c in map(str, CONCURRENCY):
        gen, exp = table["generated"][c], table["expert"][c]
        ratios[c] = {
            "generated_vs_expert": rnd(ratio(gen["throughput_rps"],
                                             exp["throughput_rps"]), 2),
            "generated_vs_naive": rnd(ratio(gen["throughput_rps"],
                                            table["naive"][c]["throughput_rps"]), 2),
            "expert_vs_naive": rnd(ratio(exp["throughput_rps"],
                                         table["naive"][c]["throughput_rps"]), 2),
            "direct_read_vs_feast_read": rnd(ratio(
                gen["throughput_rps"],
                table["generated_feast_read"][c]["throughput_rps"]), 2),
            "answer_and_log_vs_before": rnd(ratio(
                table["generated_feast_read"][c]["throughput_rps"],
                table["generated_before"][c]["throughput_rps"]), 2),
            "generated_vs_before": rnd(ratio(
                gen["throughput_rps"], table["generated_before"][c]["throughput_rps"]), 2),
            "cpu_ms_per_request": {name: table[name][c].get("cpu_ms_per_request")
                                   for name in table},
            "load_1min": sorted(x for name in table
                                for x in table[name][c].get("load_1min", [])),
        }
    latency = system["latency"]
    slo: dict = {}
    for regime, by_service in slo_runs.items():
        for name, runs in by_service.items():
            m = _med(runs)
            slo.setdefault(regime, {})[name] = {"rate_rps": system["throughput_rps"], **m,
                                                "checks": _checks(m, latency)}
    in_process = rnd(ratio(f["expert_predict_1"]["p50_ms"],
                           f["generated_predict_1"]["p50_ms"]), 2)

    def slo_met(r: dict) -> bool:
        return r["checks"]["p99"]["met"] and r["error_rate"] == 0

    def cpu(name: str, c: str) -> float:
        return table[name][c].get("cpu_ms_per_request") or float("inf")

    gen_burst = bursts["generated"]
    goals = {
        "generated >= 1.3x the expert's throughput at concurrency 16 and 64": all(
            (ratios[c]["generated_vs_expert"] or 0) >= 1.3 for c in ("16", "64")),
        "generated >= 1.0x the expert's throughput at concurrency 1":
            (ratios["1"]["generated_vs_expert"] or 0) >= 1.0,
        "generated CPU per answered request <= the expert's at concurrency 1, 16 and 64": all(
            cpu("generated", c) <= cpu("expert", c) for c in map(str, CONCURRENCY)),
        "generated p99 within the SLO at the spec's rate, fresh": slo_met(
            slo["fresh"]["generated"]),
        "generated back within the SLOs < 10 s after a 20x burst, no 503 at the spec's rate":
            gen_burst["recovered_within_10_s"],
        "generated p99 within the SLO at the spec's rate after the burst and 30 s idle":
            slo_met(slo["after_idle"]["generated"]),
    }
    return {
        "reps": reps, "duration_s": duration,
        "services": {name: {k: v for k, v in svc.items() if k not in ("pid", "url")}
                     for name, svc in services.items()},
        "predictions_agree": agree,
        "closed_loop": table,
        "ratios": ratios,
        "in_process": ceiling,
        "in_process_online_read": inprocess.get("online_read"),
        "in_process_speedup_vs_expert_1_row": in_process,
        "slo_check_open_loop": slo,
        "burst": {"factor": BURST_FACTOR, "seconds": BURST_S, "in_flight": BURST_IN_FLIGHT,
                  "rate_rps": system["throughput_rps"], "by_service": bursts},
        "goals": goals,
        "goal_met": all(goals.values()),
    }
