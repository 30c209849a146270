"""What every section shares: statistics, the child-process environment, processes by PID.

A figure is the median of several runs; its baseline is measured in the same run of the
bench, and the ratio is figure / baseline. Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mlstack.codegen.contract import TELEMETRY_ENV

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MLSTACK = str(Path(PYTHON).with_name("mlstack"))
TELEMETRY_OFF = TELEMETRY_ENV  # the contract owns the switches


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return None
    rank = q / 100 * (len(data) - 1)
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def ratio(value, baseline) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of log(y) over log(x): the growth exponent (1 = linear)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    num = sum((x - mx) * (y - my) for x, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return num / den if den else None


def rnd(value, digits: int = 3):
    if value is None:
        return None
    if isinstance(value, float):
        return round(value, digits)
    return value


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def child_env(**extra: str) -> dict[str, str]:
    """The bench's environment for child processes: telemetry off, and bytecode caches
    allowed (a user's Python writes .pyc files; without them every start recompiles)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(TELEMETRY_OFF)
    env.update(extra)
    return env


def timed_run(argv: list[str], *, env: dict | None = None, cwd: Path | str | None = None,
              timeout: float = 600, check: bool = True) -> tuple[float, float, str]:
    """Run a command to completion: (wall seconds, CPU seconds of the child, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return wall, cpu, proc.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Background processes this bench started, each in its own process group; stopped by
    PID (its group), never by name."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self._popen: dict[int, subprocess.Popen] = {}

    def start(self, argv: list[str], *, cwd: Path, env: dict, log: Path) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pids.append(proc.pid)
        self._popen[proc.pid] = proc
        return proc.pid

    def alive(self, pid: int) -> bool:
        proc = self._popen.get(pid)
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, pid: int, timeout: float = 15.0) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.alive(pid):
                break
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.alive(pid):
                time.sleep(0.05)
        if pid in self.pids:
            self.pids.remove(pid)

    def stop_all(self) -> None:
        for pid in list(reversed(self.pids)):
            self.stop(pid)


def wait_http_ready(url: str, pid: int, procs: Processes, timeout: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            raise RuntimeError(f"process {pid} exited before it was ready; see {log}:\n"
                               + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout:g} s; see {log}")
