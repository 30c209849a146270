"""The deploy's profile stage: batching derived from the measured cost of the served path.

Before a version starts, a worker (`python -m mlstack.ops.local.worker profile`) builds the
version's service object in process, as `bentoml serve` will (its model on the runtime it
will use: ONNX Runtime or scikit-learn), and times its whole input path (online lookup,
transforms, model) on real keys, per batch size (1, 2, 4 ... 128; rounds interleaved so
background load hits every size alike). From those costs, the spec's throughput and p99
(mlstack.frontend.ir.derive.choose_batching): the service's batcher never holds a request,
so batching stays on while the p99 budget has room for it (the reasons say whether the
throughput needs batches or they only form under bursts): the largest batch whose call fits a
quarter of the p99 budget, and a max_latency_ms with headroom over that call. A ranking model
served by /rank scores a request's candidates in one call, so it is derived for the p90 of the
candidates per request (the label source's groups: candidate_counts). The result, the measurements
and the reasons go to the version's folder (contract.SERVING_PROFILE_FILE), which the service
reads at start; `mlstack status` and `mlstack plan --explain` show them. A spec that fixes its
batching keeps it (the profile is still measured and shown).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from mlstack.codegen.contract import ENV_MODEL_TAG, SERVICE_MODULE, SERVING_PROFILE_FILE
from mlstack.diagnostics.errors import JournalError, StageError
from mlstack.frontend.ir.catalog import HTTP_OVERHEAD_MS
from mlstack.frontend.ir.derive import BATCH_SIZES, call_cost, choose_batching
from mlstack.ops.paths import ProjectPaths

PROFILE_SIZES = (1, *BATCH_SIZES)
PROFILE_ROUNDS = 25
# A slow model's rounds stop once these seconds are spent and the minimum is measured: 25
# rounds of a forest answering in 90-120 ms took 36 s of the deploy; 10 give its p90.
PROFILE_BUDGET_S = 8.0
PROFILE_MIN_ROUNDS = 10
PROFILE_KEYS = 512  # sampled entity keys the batches are drawn from


# -- the worker side (a child process with the version's tree and the runtime libraries) ----

def time_rounds(call, batch_of, sizes, rounds: int, budget_s: float) -> dict[int, list[float]]:
    """ms per call of `call(batch_of(n))` for each size n: every size warmed up 3 times, then
    measured in interleaved rounds (background load hits every size alike), `rounds` of them,
    or fewer once `budget_s` is spent, never under PROFILE_MIN_ROUNDS."""
    for _ in range(3):
        for n in sizes:
            call(batch_of(n))
    timings: dict[int, list[float]] = {n: [] for n in sizes}
    started, measured = time.perf_counter(), 0
    while measured < rounds and (measured < PROFILE_MIN_ROUNDS
                                 or time.perf_counter() - started < budget_s):
        for n in sizes:
            batch = batch_of(n)
            began = time.perf_counter()
            call(batch)
            timings[n].append((time.perf_counter() - began) * 1000)
        measured += 1
    return timings


def measure(package: str, tag: str, sizes=PROFILE_SIZES, rounds: int = PROFILE_ROUNDS,
            keys: list[dict] | None = None, budget_s: float = PROFILE_BUDGET_S) -> dict:
    """Time the version's service call (predict_rows: lookup, transforms, model) per batch
    size on keys found online; returns the medians and p90s (ms), the rounds measured (fewer
    than `rounds`, not under PROFILE_MIN_ROUNDS, when they outlast `budget_s`) and the
    model's runtime."""
    import importlib
    import os
    import random

    os.environ[ENV_MODEL_TAG] = tag
    import bentoml

    module = importlib.import_module(SERVICE_MODULE)
    service = next(v for v in vars(module).values() if isinstance(v, bentoml.Service))
    instance = service()  # loads the model and warms the lookup up, as the server does
    rows = [module.Row.model_validate(k) for k in keys or []]
    found = instance.inputs(rows).found.tolist() if rows else []
    usable = [rows[i] for i in found]
    if not usable:
        raise RuntimeError("none of the sampled entities has online feature values inside "
                           "its views' TTL, so the service would answer null: "
                           + stale_views(package, keys or []) + "; load newer rows into the "
                           "sources and deploy again (a blueprint's sample is moved to the "
                           "present by `python -m mlstack.runtime.sources redate data`), or "
                           "raise the view's ttl in mlstack.yaml")
    draw = random.Random(0)
    timings = time_rounds(instance.predict_rows,
                          lambda n: [draw.choice(usable) for _ in range(n)], sizes, rounds,
                          budget_s)
    measured = len(timings[sizes[0]])

    def p90(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.9 * len(values)) - 1)]

    return {"call_ms": {str(n): round(statistics.median(v), 4) for n, v in timings.items()},
            "call_p90_ms": {str(n): round(p90(v), 4) for n, v in timings.items()},
            "rounds": measured, "keys_found": len(usable), "keys_sampled": len(rows),
            "runtime": instance.model.info()}


def online_newest(package: str, keys: list[dict]) -> dict:
    """Each feature view's newest online row among these entities (an aware datetime, or None
    when none has one): what the service reads, with Feast's event timestamps (worker side)."""
    import importlib
    from datetime import UTC, datetime

    features = importlib.import_module(f"{package}.features")
    store = importlib.import_module(f"{package}.store")
    fetched = store.get_store().get_online_features(
        features=store.feature_service(), entity_rows=keys, full_feature_names=True,
    ).to_dict(include_event_timestamps=True) if keys else {}
    newest = {}
    for view in sorted(features.VIEW_SOURCES):
        stamps = [ts for column, values in fetched.items()
                  if column.startswith(f"{view}__") and column.endswith("__ts")
                  for ts in values if ts]
        newest[view] = datetime.fromtimestamp(max(stamps), UTC) if stamps else None
    return newest


def stale_views(package: str, keys: list[dict]) -> str:
    """How old each feature view's newest online row is (read where the service reads),
    beside its TTL (worker side)."""
    import importlib
    from datetime import UTC, datetime

    from mlstack.ops.report import format_age

    features = importlib.import_module(f"{package}.features")
    now = datetime.now(UTC)
    parts = []
    for view, newest in online_newest(package, keys).items():
        seconds = features.VIEW_TTL_SECONDS.get(view, 0)
        ttl = format_age(seconds) if seconds else "none"
        if newest is None:
            parts.append(f"no {view} row online for the {len(keys)} keys sampled")
        else:
            age = format_age((now - newest).total_seconds())
            parts.append(f"the newest online {view} row is {age} old, its TTL {ttl}")
    return "; ".join(parts) or "no feature view to check"


# -- the deploy side -------------------------------------------------------------------------

def candidate_counts(sizes: list[int]) -> dict | None:
    """Candidates per /rank request from the groups' sizes: median, p90 (nearest rank),
    largest and the groups counted; None without a group."""
    if not sizes:
        return None
    ordered = sorted(int(n) for n in sizes)
    return {"median": float(statistics.median(ordered)),
            "p90": ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)],
            "max": ordered[-1], "groups": len(ordered)}


def rows_per_request(measured: dict) -> float:
    """The rows one request scores, as batching is derived for: the p90 of a ranking model's
    candidates per /rank request, else 1 (/predict's one row)."""
    candidates = measured.get("candidates_per_request") or {}
    return float(candidates.get("p90") or 1)


def profile_path(code_dir: Path) -> Path:
    return Path(code_dir) / SERVING_PROFILE_FILE


def derive_profile(system, measured: dict, rate_rps: float) -> dict:
    """The serving profile of a version: batching from the measured costs (unless the spec
    fixes it), with the measurements and the reasons."""
    cost = _costs({"measured": measured})
    p99 = system.slos.p99_ms or 100.0
    choice = choose_batching(rate_rps=rate_rps, p99_ms=p99, call_ms=cost,
                             measured="measured in process",
                             rows_per_request=rows_per_request(measured))
    compiled = system.serving.batching
    if compiled.derived:
        batching = {"enabled": choice.enabled, "max_batch_size": choice.max_batch_size,
                    "max_latency_ms": choice.max_latency_ms}
        reasons = [{"setting": s, "value": v, "reason": r} for s, v, r in choice.reasons]
    else:
        batching = {"enabled": compiled.enabled, "max_batch_size": compiled.max_batch_size,
                    "max_latency_ms": compiled.max_latency_ms}
        reasons = [{"setting": "serving.batching", "value": batching,
                    "reason": "fixed by the spec (the measurement is shown, not applied)"}]
    return {"batching": batching, "reasons": reasons, "rate_rps": rate_rps, "p99_ms": p99,
            "http_ms_assumed": HTTP_OVERHEAD_MS, "measured": measured,
            "compiled_batching": {"enabled": compiled.enabled,
                                  "max_batch_size": compiled.max_batch_size,
                                  "max_latency_ms": compiled.max_latency_ms},
            "measured_at": round(time.time(), 3)}


def summary(profile: dict) -> str:
    """One line: the batching a version runs with, its cost per call and its runtime."""
    b = profile["batching"]
    cost = profile["measured"]["call_ms"]
    runtime = profile["measured"].get("runtime", {})
    batching = (f"batching {b['max_batch_size']} rows / {b['max_latency_ms']} ms"
                if b["enabled"] else "batching off")
    return (f"{batching}; one call {float(cost['1']):.2f} ms (1 row), "
            f"{float(cost[str(max(map(int, cost)))]):.2f} ms ({max(map(int, cost))} rows); "
            f"model on {runtime.get('runtime', '?')}")


def profile_version(ctx) -> dict:
    """The profile stage of a deploy (ctx: the deploy's DeployContext): measure (or take what
    the train worker measured right after training, which saves a worker start), derive,
    write the version's serving profile before its service starts."""
    from mlstack.ops.local.services import run_worker

    with ctx.stages.stage("profile") as record:
        early = ctx.profiled or {}
        if early.get("ok"):  # measured by the train worker, after it registered the model
            measured = early["result"]
        else:  # no training, or that measurement failed: the profile job names the cause
            outcome = run_worker(ctx.paths, ctx.code_dir, "profile", ctx.package,
                                 tag=ctx.version.model_tag)
            if not outcome.ok:
                raise StageError("profile", f"{outcome.error_type}: {outcome.error}",
                                 f"log: {ctx.paths.logs_dir / 'worker-profile.log'}")
            measured = outcome.result
        profile = derive_profile(ctx.system, measured, ctx.rate)
        target = profile_path(ctx.code_dir)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n")
        tmp.replace(target)
        record.detail = summary(profile)
        if early.get("ok"):
            record.detail += f" (measured in the training process, {early['seconds']:g} s)"
        runtime = measured.get("runtime", {})
        if runtime.get("runtime") == "native" and runtime.get("reason"):
            record.detail += f" ({runtime['reason']})"
    return profile


def read_profile(paths: ProjectPaths, version: str | None) -> dict | None:
    """A deployed version's serving profile, None when it has none (or it is unreadable)."""
    if not version:
        return None
    try:
        return json.loads(profile_path(paths.versions_dir / version).read_text())
    except (OSError, ValueError):
        return None


def explain_lines(profile: dict, version: str) -> list[str]:
    """The profile as `plan --explain` and `status` show it: what runs and why."""
    lines = [f"Measured at deploy ({version}): {summary(profile)}"]
    for reason in profile.get("reasons", []):
        lines.append(f"  {reason['setting']} = {json.dumps(reason['value'])}")
        lines.append(f"      {reason['reason']}")
    runtime = profile["measured"].get("runtime", {})
    if runtime:
        lines.append(f"  model runtime = {runtime.get('runtime')}")
        lines.append(f"      {runtime.get('reason')}")
    cost = profile["measured"]["call_ms"]
    lines.append("  cost of one call (ms, median, in process): " + ", ".join(
        f"{n} row{'' if n == '1' else 's'} {float(ms):.2f}"
        for n, ms in sorted(cost.items(), key=lambda i: int(i[0]))))
    candidates = profile["measured"].get("candidates_per_request")
    if candidates:  # a /rank request's cost is a call of its candidates' rows
        lines.append(
            f"  candidates per /rank request (the label source's {candidates['groups']} "
            f"groups): median {candidates['median']:g}, p90 {candidates['p90']}, largest "
            f"{candidates['max']}; batching is derived for the p90, one call of "
            f"{candidates['p90']} rows {call_cost(_costs(profile), candidates['p90']):.2f} ms")
    return lines


def _costs(profile: dict) -> dict[int, float]:
    return {int(n): float(ms) for n, ms in profile["measured"]["call_ms"].items()}


def deployed_profile(spec: Path | str) -> tuple[str, dict] | None:
    """The serving version of the project holding `spec` and its serving profile, if any
    (reads the deploy record only; starts nothing)."""
    from mlstack.ops.local.state import DeploymentState

    paths = ProjectPaths.for_spec(Path(spec))
    if not paths.deployments_file.is_file():
        return None
    try:
        current = DeploymentState.load(paths.deployments_file).current
    except (OSError, ValueError, KeyError, TypeError, JournalError):
        return None
    profile = read_profile(paths, current)
    return (current, profile) if current and profile else None
