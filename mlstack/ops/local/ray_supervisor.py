"""The supervisor of a project's local Ray cluster: a head and N worker nodes on loopback.

Run as `python -m mlstack.ops.local.ray_supervisor --status FILE --port P --workers N
--cpu C --memory-bytes M --temp-dir D --logs DIR` (deploy starts it in its own session,
marked with the project's `ray` owner marker, see procs.py). Each node is one
`ray start --block` process in a session of its own, marked `<project>/ray/head` or
`<project>/ray/worker-<i>`, so a node's whole tree (gcs, raylet, its Ray workers) is found by
marker even where Ray leaves the session:

- the head runs no tasks (--num-cpus=0): every task and Ray Train worker lands on a worker
  node; the workers get --num-cpus=C and --memory=M, and every process of a worker node is
  held to M bytes of private memory (RLIMIT_DATA, inherited), so a task that needs more
  fails with MemoryError on the worker instead of taking the machine;
- `ray start --block` exits when a process of its node dies: a dead worker node is stopped
  (by marker) and started again after a backoff (1, 2, 4 ... 30 s); a dead head takes the
  whole cluster down and up again (the workers cannot outlive their GCS);
- SIGTERM stops every node (SIGTERM to each `ray start`, the workers at once, then the head;
  SIGKILL by marker after 10 s) and then the supervisor;
- the head's Ray Client server gets a free port at each start: Ray's default, 10001, may be
  held by another program, and then the client server fails and `ray start --block` exits
  with it (the head was restarted for ever).

The status file (JSON, replaced atomically) says: state (starting, ready, restarting,
failed, stopping, stopped), the address, the nodes (pid, state, restarts), the reason of the
last restart, timestamps. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mlstack.ops.local import procs

POLL_SECONDS = 0.5
BACKOFF_MAX = 30.0
HEALTHY_RESETS_BACKOFF = 60.0
START_TIMEOUT = 180.0  # seconds a node gets to say "Ray runtime started"
STARTED = b"Ray runtime started"
# Allocators of a process held to a memory limit: RLIMIT_DATA counts address space reserved,
# not used, and pyarrow's default allocator (mimalloc) reserves 1 GiB at import, glibc 64 MiB
# per thread arena (a Ray worker has 20-odd threads); glibc's mmap threshold, left to grow,
# keeps freed batch buffers in the heap (reading 1.7 GB of parquet batch by batch held 560
# MiB more than with it fixed). With these a Ray worker that imported pandas, pyarrow and
# xgboost holds about 440 MiB of its limit before any task.
# A node told to stop (down, a new shape, compute gone) stops at once: no task of a project's
# runs then (a deploy holds the project), and Ray's default drain (up to 30 s) made stopping
# the cluster after a Ray Train fit take 24.6 s in CI; 2.7 s without it.
NODE_ENV = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
LIMITED_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2",
               "MALLOC_MMAP_THRESHOLD_": "131072"}


def ray_command() -> list[str]:
    """The `ray` CLI of this Python (its console script beside the interpreter)."""
    script = Path(sys.executable).parent / "ray"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


class Node:
    def __init__(self, name: str, argv: list[str], log: Path, owner: str,
                 memory_bytes: int | None, ports: Callable[[], list[str]] | None = None):
        self.name, self.argv, self.log, self.owner = name, argv, log, owner
        self.ports = ports  # options naming ports, chosen again at each start
        self.memory_bytes = memory_bytes
        self.proc: subprocess.Popen | None = None
        self.state, self.restarts, self.backoff, self.next_start = "stopped", 0, 1.0, 0.0
        self.started_at = 0.0
        self.log_offset = 0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        env = {**os.environ, procs.OWNER_ENV: self.owner, **NODE_ENV,
               **(LIMITED_ENV if self.memory_bytes else {})}
        limit, death = self.memory_bytes, procs.parent_death_signal(signal.SIGTERM)

        def preexec() -> None:
            death()
            if limit:
                resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

        with open(self.log, "ab") as out:
            argv = [*self.argv, *(self.ports() if self.ports else [])]
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True, preexec_fn=preexec)
        self.state, self.started_at = "starting", time.monotonic()

    def started(self) -> bool:
        """Its `ray start` said the node runs (in what it logged since this start)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_offset)
                return STARTED in f.read()
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Ask its `ray start` to stop the node (what stop() then waits for): the `ray start`
        process alone, which stops its processes in order in about 2 s; SIGTERM to its whole
        group killed the node's processes under it first, and it then waited out Ray's 30 s
        drain for them."""
        if self.alive():
            assert self.proc is not None  # alive() checked it
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        self.terminate()
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        procs.stop_owned(self.owner, timeout=timeout)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.state = "stopped"

    def record(self) -> dict:
        return {"name": self.name,
                "pid": self.proc.pid if self.proc is not None and self.alive() else None,
                "state": self.state, "restarts": self.restarts}


class ClusterSupervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.status_file, self.port = Path(args.status), args.port
        self.owner = os.environ.get(procs.OWNER_ENV, "local/ray")
        self.address = f"127.0.0.1:{self.port}"
        logs = Path(args.logs)
        common = ["start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        head_store = max(args.memory_bytes // 4, 128 * 2**20)
        # a temp dir per node: nodes started at once in one temp dir raced for the same
        # socket and log names (raylet.1), and one of them then timed out after 30 s
        self.head = Node("head", [*ray_command(), *common, f"--temp-dir={args.temp_dir}",
                                  "--head", f"--port={self.port}",
                                  "--num-cpus=0", "--include-dashboard=false",
                                  f"--object-store-memory={head_store}"],
                         logs / "ray-head.log", f"{self.owner}/head", None,
                         ports=lambda: [f"--ray-client-server-port={procs.free_port()}"])
        worker_store = max(args.memory_bytes // 4, 80 * 2**20)
        self.workers = [
            Node(f"worker-{i}", [*ray_command(), *common,
                                 f"--temp-dir={Path(args.temp_dir) / f'worker-{i}'}",
                                 f"--address={self.address}",
                                 f"--num-cpus={args.cpu:g}", f"--memory={args.memory_bytes}",
                                 f"--object-store-memory={worker_store}"],
                 logs / f"ray-worker-{i}.log", f"{self.owner}/worker-{i}", args.memory_bytes)
            for i in range(1, args.workers + 1)]
        self.stopping, self.ever_ready = False, False
        self.info: dict = {"supervisor_pid": os.getpid(), "address": self.address,
                           "port": self.port, "workers": args.workers, "state": "starting",
                           "reason": "", "started_at": round(time.time(), 3)}

    def nodes(self) -> list[Node]:
        return [self.head, *self.workers]

    def observed_state(self) -> str:
        """ready (every node runs), starting (never was ready) or restarting."""
        if all(n.state == "running" for n in self.nodes()):
            self.ever_ready = True
            return "ready"
        return "restarting" if self.ever_ready else "starting"

    def report(self, state: str | None = None, **details) -> None:
        """Write the status file; `state` None: as the nodes are now (a report made while a
        node waits out its backoff never says ready)."""
        state = state or self.observed_state()
        if state != self.info.get("state"):
            self.info["state"] = state
            self.info["since"] = round(time.time(), 3)
        self.info.update(details)
        self.info["nodes"] = [n.record() for n in self.nodes()]
        self.info["updated_at"] = round(time.time(), 3)
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info, indent=2, sort_keys=True))
        os.replace(tmp, self.status_file)

    def on_signal(self, signum, _frame) -> None:
        self.stopping = True

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        self.head.start()
        self.report()
        while not self.stopping:
            changed = self.step()
            state = self.observed_state()
            failed = [n for n in self.nodes() if n.state == "failed"]
            if failed and not self.ever_ready:
                self.report("failed", reason=f"{failed[0].name} did not start: see "
                            f"{failed[0].log}")
                self.stop_all()
                return 1
            if changed or state != self.info["state"]:
                self.report()
            time.sleep(POLL_SECONDS)
        self.report("stopping")
        self.stop_all()
        self.report("stopped")
        return 0

    def step(self) -> bool:
        """One look at every node; True when something changed."""
        now = time.monotonic()
        changed = False
        if self.head.state in ("starting", "running") and not self.head.alive():
            assert self.head.proc is not None  # start() set it
            reason = f"the head exited (code {self.head.proc.returncode})"
            self.stop_all()
            self.schedule(self.head, reason)
            for worker in self.workers:
                worker.state = "waiting"  # for the head
            return True
        for node in self.nodes():
            if node.state in ("stopped", "waiting", "backoff") and now >= node.next_start:
                if node is self.head or self.head.state == "running":
                    node.start()
                    changed = True
            elif node.state == "starting":
                assert node.proc is not None  # start() set it
                if not node.alive():
                    self.schedule(node, f"{node.name} exited while starting (code "
                                  f"{node.proc.returncode})", starting=True)
                    changed = True
                elif node.started() and (node is not self.head or self.port_open()):
                    node.state = "running"
                    changed = True
                elif now - node.started_at > START_TIMEOUT:
                    node.stop()
                    self.schedule(node, f"{node.name} did not start in {START_TIMEOUT:g} s",
                                  starting=True)
                    changed = True
            elif node.state == "running":
                assert node.proc is not None  # start() set it
                if not node.alive():
                    reason = f"{node.name} exited (code {node.proc.returncode})"
                    procs.stop_owned(node.owner, timeout=5.0)  # what its node left
                    self.schedule(node, reason)
                    changed = True
                elif now - node.started_at > HEALTHY_RESETS_BACKOFF:
                    node.backoff = 1.0
        return changed

    def schedule(self, node: Node, reason: str, starting: bool = False) -> None:
        """Start `node` again after its backoff; a node that never ran fails after 3 tries."""
        node.restarts += 1
        if starting and node.restarts > 3:
            node.state = "failed"
        else:
            node.state = "backoff"
            node.next_start = time.monotonic() + node.backoff
            node.backoff = min(node.backoff * 2, BACKOFF_MAX)
        self.report(reason=reason, last_restart_at=round(time.time(), 3))

    def port_open(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop_all(self) -> None:
        """The workers first, all at once (each `ray start` takes seconds to stop its node),
        then their head."""
        for node in self.workers:
            node.terminate()
        for node in self.workers:
            node.stop()
        self.head.stop()
        procs.stop_owned(self.owner, timeout=5.0, keep=os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlstack.ops.local.ray_supervisor")
    parser.add_argument("--status", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--cpu", type=float, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--logs", required=True)
    return ClusterSupervisor(parser.parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
