"""The scheduler sidecars' cost on a deployed local project (issue 19's budget: the added
processes idle below 5% of one CPU and below 500 MB RSS together).

    python -m bench.scheduler_idle PATH/TO/mlstack.yaml [SECONDS]

1. time to ready: the project's Prefect server is stopped, started again (its database as
   it is) and waited for (/api/health answers 200), with the load average before and after;
2. idle cost: CPU time (utime + stime, /proc/<pid>/stat) of the server's and the runner's
   processes over SECONDS (default 60) as % of one CPU, and their RSS (VmRSS) at the end.
   Flow runs are processes of their own (marker sidecar/prefect-runs) and are not counted:
   measure between runs (the shipped schedules run materialize every 12 h, monitoring
   hourly) or with the deployments paused.
"""

from __future__ import annotations

import json
import os
import sys
import time

from mlstack.ops.local import procs, scheduler, sidecars
from mlstack.ops.paths import ProjectPaths

NAMES = (scheduler.SERVER, scheduler.RUNNER)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def time_to_ready(paths: ProjectPaths) -> dict:
    server = scheduler.server_sidecar(paths)
    sidecars.stop(paths, server.name)
    load = os.getloadavg()
    began = time.monotonic()
    pid = sidecars.start(paths, server, reason="bench: time to ready")
    sidecars.wait_ready(paths, server, pid)
    return {"ready_s": round(time.monotonic() - began, 1), "load_before": load,
            "load_after": os.getloadavg(), "cpus": os.cpu_count()}


def idle_cost(paths: ProjectPaths, seconds: float) -> dict:
    group = {p.pid: p.owner.rsplit("/", 1)[1] for name in NAMES
             for p in sidecars.running(paths, name)}
    before = {pid: _cpu_seconds(pid) for pid in group}
    began, load = time.monotonic(), os.getloadavg()
    time.sleep(seconds)
    wall = time.monotonic() - began
    out: dict = {}
    for pid, name in group.items():
        row = out.setdefault(name, {"cpu_pct": 0.0, "rss_mb": 0.0})
        row["cpu_pct"] += 100 * (_cpu_seconds(pid) - before[pid]) / wall
        row["rss_mb"] += _rss_mb(pid)
    rounded = {n: {k: round(v, 2) for k, v in r.items()} for n, r in out.items()}
    return {"window_s": round(wall, 1), "load_before": load, "load_after": os.getloadavg(),
            "per_sidecar": rounded,
            "total": {"cpu_pct": round(sum(r["cpu_pct"] for r in out.values()), 2),
                      "rss_mb": round(sum(r["rss_mb"] for r in out.values()), 1)}}


def main(argv: list[str]) -> int:
    paths = ProjectPaths.for_spec(argv[0])
    seconds = float(argv[1]) if len(argv) > 1 else 60.0
    ready = time_to_ready(paths)
    procs.wait_ready(f"{scheduler.server_url(paths)}{scheduler.READY_PATH}",
                     sidecars.record(paths, scheduler.SERVER)["pid"], 60)
    time.sleep(30)  # the runner reconnects; the server's start-up work settles
    sys.stdout.write(json.dumps({"ready": ready, "idle": idle_cost(paths, seconds)},
                                indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
