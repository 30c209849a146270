"""The sidecars of a local deployment: the long-running services that keep a deployed system
alive beside its versions and router (Prefect's server and the runner of the scheduled
deployments, Prometheus, Alertmanager).

A provider module declares what it runs as `Sidecar` values (`declared()` collects them from
the providers listed in PROVIDERS); this module starts, probes, restarts and stops them, each
under the owner marker `<project id>/sidecar/<name>` (procs.py), so `down` and the marker
scans find them like every other process of the project.

- a sidecar's port is chosen once and kept in `.mlstack/sidecars/ports.json`, so a restart
  comes back on the same address (the UI link `status` printed stays right);
- `.mlstack/sidecars/<name>.json` records the last start: PID, port, start time, restarts,
  the reason of the last restart (written atomically);
- `ensure()` starts what is not running, restarts what died or stopped answering its ready
  probe, with a backoff per sidecar (1, 2, 4 ... 30 s; reset once it has been healthy a
  minute), and never touches a healthy one.

Standard library only: the keeper that calls `ensure()` must stay small.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.ops.local import procs
from mlstack.ops.local.state import write_atomically
from mlstack.ops.paths import ProjectPaths

ROLE = "sidecar"
BACKOFF_MAX = 30.0
HEALTHY_RESETS_BACKOFF = 60.0
READY_TIMEOUT = 120.0  # Prefect's server needs 16 s at load 1.7, more on a busy machine

# modules with `sidecars(paths, system) -> list[Sidecar]`; the order is the start order
PROVIDERS: tuple[str, ...] = ("mlstack.ops.local.scheduler", "mlstack.ops.local.alerting")


@dataclass(frozen=True)
class Sidecar:
    """One long-running service of a deployed project, as its provider declares it."""

    name: str  # 'prefect-server': the owner marker's last part and the files' names
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # the whole environment of the process
    cwd: Path = Path(".")
    port: int | None = None  # where it listens on 127.0.0.1 (from port_for)
    ready_path: str | None = None  # GET http://127.0.0.1:<port><ready_path> answers 200 when ready
    needs: tuple[str, ...] = ()  # sidecars that must be ready before this one starts
    what: str = ""  # one line for status and errors: "Prefect server (UI and API)"


def declaration(sidecar: Sidecar) -> dict:
    """What the sidecar runs as (argv, environment, folder, port), as its record keeps it."""
    return {"argv": list(sidecar.argv), "env": dict(sorted(sidecar.env.items())),
            "cwd": str(sidecar.cwd), "port": sidecar.port}


def digest(sidecar: Sidecar) -> str:
    """The declaration's hash: a declaration that changed (a new version's code folder,
    say) means a restart."""
    text = json.dumps([list(sidecar.argv), sorted(sidecar.env.items()), str(sidecar.cwd),
                       sidecar.port])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changes(before: dict, sidecar: Sidecar) -> str:
    """What differs between the recorded declaration and this one, for the restart's reason:
    "its declaration changed (argv, env PATH)"; no detail when the record has none."""
    old, new = before.get("declaration"), declaration(sidecar)
    if not isinstance(old, dict):
        return "its declaration changed"
    parts = [key for key in ("argv", "cwd", "port") if old.get(key) != new[key]]
    recorded = old.get("env")
    old_env: dict = recorded if isinstance(recorded, dict) else {}
    new_env: dict = new["env"]
    parts += [f"env {name}" for name in sorted(set(old_env) | set(new_env))
              if old_env.get(name) != new_env.get(name)]
    return f"its declaration changed ({', '.join(parts) or 'digest'})"


def owner(paths: ProjectPaths, name: str) -> str:
    return f"{paths.project_id}/{ROLE}/{name}"


def folder(paths: ProjectPaths) -> Path:
    return paths.state_dir / "sidecars"


def log_file(paths: ProjectPaths, name: str) -> Path:
    return paths.logs_dir / f"{ROLE}-{name}.log"


def record_file(paths: ProjectPaths, name: str) -> Path:
    return folder(paths) / f"{name}.json"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def port_for(paths: ProjectPaths, name: str) -> int:
    """The sidecar's port: the one it had before, while no other program holds it (one of
    ours that still runs holds it too: that is fine), else a free one, kept from now on."""
    ports_file = folder(paths) / "ports.json"
    ports = _read_json(ports_file)
    port = ports.get(name)
    if isinstance(port, int) and (procs.port_is_free(port) or running(paths, name)):
        return port
    port = procs.free_port()
    ports[name] = port
    _write_json(ports_file, ports)
    return port


def record(paths: ProjectPaths, name: str) -> dict:
    """What the last start of the sidecar recorded ({} when it never started)."""
    return _read_json(record_file(paths, name))


def running(paths: ProjectPaths, name: str) -> list[procs.OwnedProcess]:
    return procs.owned(owner(paths, name))


def healthy(sidecar: Sidecar, timeout: float = 2.0) -> bool:
    """Its process runs, and its ready probe (where it has one) answers 200."""
    if sidecar.port is None or sidecar.ready_path is None:
        return True
    return procs.http_status(f"http://127.0.0.1:{sidecar.port}{sidecar.ready_path}",
                             timeout=timeout) == 200


def start(paths: ProjectPaths, sidecar: Sidecar, reason: str = "") -> int:
    """Start the sidecar (whatever of it still runs is stopped first); returns its PID. Does
    not wait for it: see wait_ready."""
    procs.stop_owned(owner(paths, sidecar.name), timeout=10.0)
    before = record(paths, sidecar.name)
    pid = procs.start_background(list(sidecar.argv), cwd=sidecar.cwd, env=sidecar.env or None,
                                 log=log_file(paths, sidecar.name),
                                 owner=owner(paths, sidecar.name))
    restarts = int(before.get("restarts", 0)) + (1 if reason else 0)
    _write_json(record_file(paths, sidecar.name), {
        "name": sidecar.name, "pid": pid, "port": sidecar.port,
        "started_at": round(time.time(), 3), "restarts": restarts,
        "reason": reason or before.get("reason", ""), "what": sidecar.what,
        "digest": digest(sidecar), "declaration": declaration(sidecar)})
    return pid


def wait_ready(paths: ProjectPaths, sidecar: Sidecar, pid: int,
               timeout: float = READY_TIMEOUT) -> None:
    """Until its ready probe answers 200; RuntimeError naming the sidecar and its log's tail
    when the process exits first or the time runs out."""
    if sidecar.port is None or sidecar.ready_path is None:
        deadline = time.monotonic() + 3.0  # no probe: alive a moment after the start is all
        while time.monotonic() < deadline:
            if not procs.is_alive(pid):
                break
            time.sleep(0.2)
        else:
            return
        raise RuntimeError(f"{sidecar.what or sidecar.name} exited at its start:\n"
                           f"{procs.log_tail(log_file(paths, sidecar.name))}")
    try:
        procs.wait_ready(f"http://127.0.0.1:{sidecar.port}{sidecar.ready_path}", pid, timeout,
                         log_file(paths, sidecar.name))
    except RuntimeError as exc:
        raise RuntimeError(f"{sidecar.what or sidecar.name} on 127.0.0.1:{sidecar.port} did "
                           f"not become ready: {exc}") from None


def stop(paths: ProjectPaths, name: str, timeout: float = 10.0) -> list[int]:
    """Stop the sidecar by its marker; returns the PIDs that would not stop."""
    return procs.stop_owned(owner(paths, name), timeout=timeout)


def stop_all(paths: ProjectPaths) -> list[int]:
    return procs.stop_owned(f"{paths.project_id}/{ROLE}/", timeout=10.0)


def declared(paths: ProjectPaths, system, providers: tuple[str, ...] | None = None
             ) -> list[Sidecar]:
    """Every sidecar the providers declare for this system, in start order."""
    out: list[Sidecar] = []
    for name in PROVIDERS if providers is None else providers:
        provide: Callable = importlib.import_module(name).sidecars
        out.extend(provide(paths, system))
    return out


def start_all(paths: ProjectPaths, sidecars: list[Sidecar],
              timeout: float = READY_TIMEOUT) -> list[str]:
    """Bring every sidecar up and wait until each is ready, in order; a healthy one is left
    as it is. Returns one line per sidecar started. RuntimeError (naming the sidecar, the
    cause and its log) when one cannot start: the caller fails before any traffic moves."""
    notes = []
    for sidecar in sidecars:
        before = record(paths, sidecar.name)
        same = before.get("digest") == digest(sidecar)
        if same and running(paths, sidecar.name) and healthy(sidecar):
            continue
        pid = start(paths, sidecar, reason="" if same or not before
                    else changes(before, sidecar))
        wait_ready(paths, sidecar, pid, timeout)
        notes.append(f"started {sidecar.what or sidecar.name}"
                     + (f" on 127.0.0.1:{sidecar.port}" if sidecar.port else ""))
    return notes


def ensure(paths: ProjectPaths, sidecars: list[Sidecar], now: float | None = None) -> list[str]:
    """One pass of supervision (the keeper calls it every few seconds): start a sidecar that
    is not running, restart one whose probe failed, each after its backoff. Never waits for
    readiness (the next pass sees it). Returns one line per (re)start."""
    now = time.time() if now is None else now
    notes = []
    for sidecar in sidecars:
        rec = record(paths, sidecar.name)
        # its own process, not only what it started: a scheduler killed leaves its workers
        # (they carry its marker) until the restart stops them
        alive = bool(running(paths, sidecar.name)) and (
            not isinstance(rec.get("pid"), int)
            or procs.is_owned(rec["pid"], owner(paths, sidecar.name)))
        if alive and rec.get("digest") != digest(sidecar):
            reason = changes(rec, sidecar)
            start(paths, sidecar, reason=reason)
            notes.append(f"restarted {sidecar.what or sidecar.name}: {reason}")
            continue
        started = float(rec.get("started_at", 0.0))
        if alive and (healthy(sidecar) or now - started < READY_TIMEOUT):
            if alive and now - started > HEALTHY_RESETS_BACKOFF and rec.get("backoff"):
                rec["backoff"] = 0
                _write_json(record_file(paths, sidecar.name), rec)
            continue
        backoff = float(rec.get("backoff", 0.0))
        if now - started < backoff:
            continue
        reason = "it was not running" if not alive else "its ready probe failed"
        start(paths, sidecar, reason=reason)
        rec = record(paths, sidecar.name)
        rec["backoff"] = min(BACKOFF_MAX, max(1.0, backoff * 2))
        _write_json(record_file(paths, sidecar.name), rec)
        notes.append(f"restarted {sidecar.what or sidecar.name}: {reason}")
    return notes
