"""The router's own cost (issue 20): a baseline router (the router of a git revision, HEAD by
default) and the working tree's, each in front of the same stub backend that answers at once,
closed loop at concurrency 1/16/64, rounds interleaved (the stub alone too, for the
throughput ratio). For every run: answered req/s and the router process's CPU per answered
request (psutil), and the 1-minute load average.

    .venv/bin/python -m bench.router_cpu [--baseline HEAD] [--rounds 3] [--seconds 2.5]

The baseline's mlstack package is extracted with `git archive` into a temporary folder and
run from there. Prints one JSON object. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from bench.common import PYTHON, Processes, free_port, median, rnd
from bench.common import wait_http_ready as wait_ready
from bench.loadgen import closed_loop, warm_up
from mlstack.ops.local.router import write_table

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 16, 64)
LIMITS = {"backend_timeout_s": 5.0, "max_in_flight": 64, "max_queue": 256,
          "queue_timeout_s": 1.0}  # as deploy writes them for churn
BODY = [{"rows": [{"customer_id": 1001}]}]
ANSWER = b'{"predictions": [0.5]}'


def serve_stub(port: int) -> None:
    """A backend that answers every request at once, kept alive (uvloop and httptools)."""
    import httptools
    import uvloop

    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
             + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)

    class Stub(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_message_complete(self):
            self.transport.write(reply)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Stub, "127.0.0.1", port,
                                                                backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _router(procs: Processes, workdir: Path, name: str, source: Path, backend: str) -> dict:
    port = free_port()
    config = workdir / f"router-{name}.json"
    write_table(config, [{"version": "v1", "url": backend, "weight": 100}], LIMITS)
    log = workdir / f"router-{name}.log"
    env = {**os.environ, "PYTHONPATH": str(source)}
    pid = procs.start([PYTHON, "-m", "mlstack.ops.local.router", "--port", str(port),
                       "--config", str(config)], cwd=source, env=env, log=log)
    wait_ready(f"http://127.0.0.1:{port}/-/router", pid, procs, 60.0, log)
    return {"url": f"http://127.0.0.1:{port}", "pid": pid}


def _run(target: dict, concurrency: int, seconds: float) -> dict:
    before = _cpu(target["pid"]) if target.get("pid") else 0.0
    out = closed_loop(f"{target['url']}/predict", BODY, concurrency=concurrency,
                      duration=seconds)
    answered = out["requests"] - out["errors"]
    cpu = (_cpu(target["pid"]) - before) if target.get("pid") else None
    return {"rps": rnd(out["throughput_rps"], 1), "errors": out["errors"],
            "router_cpu_ms": rnd(cpu * 1000 / answered, 4) if answered and cpu else None,
            "load": rnd(os.getloadavg()[0], 2)}


def _baseline(revision: str, into: Path) -> Path:
    """The mlstack package of `revision`, extracted into `into`."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "mlstack"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--stub":
        return serve_stub(int(sys.argv[2]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="HEAD", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="router-cpu-"))
    procs = Processes()
    try:
        stub_port = free_port()
        stub_log = workdir / "stub.log"
        stub = procs.start([PYTHON, "-m", "bench.router_cpu", "--stub", str(stub_port)],
                           cwd=REPO, env=dict(os.environ), log=stub_log)
        backend = f"http://127.0.0.1:{stub_port}"
        wait_ready(f"{backend}/", stub, procs, 30.0, stub_log)
        old = _baseline(args.baseline, workdir / "baseline")
        targets = {"stub": {"url": backend},
                   "old": _router(procs, workdir, "old", old, backend),
                   "new": _router(procs, workdir, "new", REPO, backend)}
        for target in targets.values():
            warm_up(f"{target['url']}/predict", BODY, 50)
        runs: dict[str, dict[int, list[dict]]] = {
            name: {c: [] for c in CONCURRENCY} for name in targets}
        for _ in range(args.rounds):
            for c in CONCURRENCY:
                for name, target in targets.items():
                    runs[name][c].append(_run(target, c, args.seconds))
        summary = {name: {str(c): {"rps": median([r["rps"] for r in rs]),
                                   "router_cpu_ms": median([r["router_cpu_ms"] for r in rs
                                                            if r["router_cpu_ms"] is not None]),
                                   "errors": sum(r["errors"] for r in rs)}
                          for c, rs in by_c.items()}
                   for name, by_c in runs.items()}
        print(json.dumps({"baseline": args.baseline, "rounds": args.rounds,
                          "seconds": args.seconds, "cpus": os.cpu_count(),
                          "load_1min_after": rnd(os.getloadavg()[0], 2),
                          "summary": summary, "runs": runs}, indent=1))
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
