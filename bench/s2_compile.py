"""Section 2: lint + compile of generated specs with 10, 100 and 1,000 features (100 entities
and sources each): time per phase (first call in a fresh process), the whole `mlstack
compile` command, peak memory, and the growth exponent (log-log least squares)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import (
    MLSTACK,
    PYTHON,
    REPO,
    child_env,
    loglog_slope,
    median,
    ratio,
    rnd,
    timed_run,
)
from bench.specgen import spec_text

SIZES = (10, 100, 1000)
ENTITIES = 100
WORKER = REPO / "bench" / "workers" / "compile_size.py"
GOAL_SECONDS = 1.0


def _maxrss_mb_of(argv, env, cwd) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one child process."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def run(workdir: Path, runs: int = 3) -> dict:
    env = child_env()
    sizes = {}
    for features in SIZES:
        folder = workdir / f"scale-{features}"
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / "mlstack.yaml"
        spec.write_text(spec_text(features, ENTITIES))
        timed_run([PYTHON, str(WORKER), str(spec)], env=env, cwd=REPO)  # bytecode, templates
        phases: dict[str, list[float]] = {}
        cli_wall, cli_rss = [], []
        for i in range(runs):
            _w, _c, out = timed_run([PYTHON, str(WORKER), str(spec)], env=env, cwd=REPO)
            for key, value in json.loads(out.strip().splitlines()[-1]).items():
                phases.setdefault(key, []).append(value)
            target = folder / f"out-{i}"
            shutil.rmtree(target, ignore_errors=True)
            wall, rss = _maxrss_mb_of([MLSTACK, "compile", str(spec), "-o", str(target)],
                                      env, REPO)
            cli_wall.append(wall)
            cli_rss.append(rss)
            shutil.rmtree(target, ignore_errors=True)
        _w, _c, out = timed_run([PYTHON, str(WORKER), str(spec), "--tracemalloc"], env=env,
                                cwd=REPO)
        peak = json.loads(out.strip().splitlines()[-1])["tracemalloc_peak_mb"]
        sizes[features] = {
            "features": features,
            "spec_lines": len(spec.read_text().splitlines()),
            "lint_s": rnd(median(phases["lint_s"]), 4),
            "compile_s": rnd(median(phases["compile_s"]), 4),
            "format_s": rnd(median(phases["format_s"]), 4),
            "lint_compile_s": rnd(median(phases["total_s"]), 4),
            "cli_compile_s": rnd(median(cli_wall), 4),
            "cli_maxrss_mb": rnd(median(cli_rss), 1),
            "tracemalloc_peak_mb": rnd(peak, 2),
            "generated_files": int(median(phases["files"])),
            "generated_bytes": int(median(phases["bytes"])),
        }
    xs = list(SIZES)
    base = sizes[SIZES[0]]
    for row in sizes.values():
        row["ratio_to_10"] = rnd(ratio(row["lint_compile_s"], base["lint_compile_s"]), 2)
    largest = sizes[SIZES[-1]]
    exponent = loglog_slope(xs, [sizes[x]["lint_compile_s"] for x in xs])
    upper = loglog_slope(xs[1:], [sizes[x]["lint_compile_s"] for x in xs[1:]])
    return {
        "runs": runs,
        "entities": ENTITIES,
        "sizes": [sizes[x] for x in xs],
        "growth_exponent": rnd(exponent, 2),
        "growth_exponent_100_1000": rnd(upper, 2),
        "memory_exponent": rnd(loglog_slope(xs, [sizes[x]["tracemalloc_peak_mb"]
                                                  for x in xs]), 2),
        "goal": f"1,000-feature spec < {GOAL_SECONDS:g} s (lint + compile), near-linear",
        "goal_met": largest["cli_compile_s"] < GOAL_SECONDS and (upper or 0) <= 1.2,
    }
