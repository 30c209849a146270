"""Background processes a deploy starts (services, the router): start, wait, stop by PID.

Every process a deploy starts carries an owner marker in its environment,
MLSTACK_OWNER=<project id>/<role> (roles: `version/v3`, `router`, `worker/train`), and every
process it starts inherits it, even one that leaves its parent's session (BentoML's workers
call setsid). So a project's processes are found by reading /proc/<pid>/environ, not by name
or by a recorded PID alone: `owned(prefix)` lists them, `stop_owned(prefix)` stops them.

Standard library only: status, down, rollback and logs run from the core install (the HTTP
client of the load test, httpx, comes with the `runtime` extra)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

OWNER_ENV = "MLSTACK_OWNER"
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on the port (connections in TIME_WAIT do not count: servers bind
    with SO_REUSEADDR, and so does this check)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_status(url: str, timeout: float = 2.0) -> int | str:
    """The status code a GET of `url` answers, or the name of the error when none does.
    Proxies in the environment are not used: these URLs are on 127.0.0.1."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError) as exc:  # refused, reset, timed out, a malformed answer
        return type(exc).__name__


def http_get_json(url: str, timeout: float = 2.0) -> tuple[int | str, object]:
    """GET a JSON answer: (status code, decoded JSON or None), or (the error's name, None)."""
    return _json_call(urllib.request.Request(url), timeout)


def http_post_json(url: str, body: dict, timeout: float = 5.0,
                   method: str = "POST") -> tuple[int | str, object]:
    """POST (or `method`) a JSON body; (status code, decoded JSON answer or None), or (the
    error's name, None) when nothing answers. Standard library only, no proxies (127.0.0.1)."""
    return _json_call(urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json"}), timeout)


def _json_call(request: urllib.request.Request, timeout: float) -> tuple[int | str, object]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError) as exc:
        return type(exc).__name__, None
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


def parent_death_signal(sig: int = signal.SIGTERM):
    """A preexec_fn: the child gets `sig` when the process that started it dies (Linux), so
    a deploy killed with SIGKILL takes its workers with it."""
    def preexec() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return preexec


def start_background(argv: list[str], *, cwd: Path, env: dict[str, str] | None, log: Path,
                     owner: str | None = None) -> int:
    """Start a detached process (its own session/process group); returns its PID. `owner`
    marks it and everything it starts (OWNER_ENV)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        env = {**(os.environ if env is None else env), OWNER_ENV: owner}
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


# -- processes by owner marker ---------------------------------------------------------------

@dataclass(frozen=True)
class OwnedProcess:
    pid: int
    ppid: int
    owner: str
    command: str


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent PID) from /proc/<pid>/stat, None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def owner_of(pid: int) -> str | None:
    """The owner marker in a process's environment (None: none, gone, or not readable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    key = OWNER_ENV.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode(errors="replace")
    return None


def owned(prefix: str) -> list[OwnedProcess]:
    """Live processes whose owner marker is `prefix` or starts with `prefix/` (zombies left
    out), this process and its ancestors excepted."""
    skip = _ancestors(os.getpid())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in skip:
            continue
        owner = owner_of(pid)
        if owner is None or not (owner == prefix or owner.startswith(prefix + "/")):
            continue
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append(OwnedProcess(pid, stat[1], owner, command[:200]))
    return sorted(found, key=lambda p: p.pid)


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        stat = _stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return out


def cwd_of(pid: int | None) -> str | None:
    """The working folder of a process (None: gone or not readable)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd") if pid else None
    except OSError:
        return None


def is_owned(pid: int | None, owner: str) -> bool:
    """The process is alive and carries exactly this owner marker (a reused PID does not)."""
    return bool(pid) and is_alive(pid) and owner_of(pid) == owner


def stop_owned(prefix: str, timeout: float = 10.0, keep: int | None = None) -> list[int]:
    """Stop every process owned by `prefix` (SIGTERM, then SIGKILL after `timeout`), `keep`
    excepted; returns the PIDs still alive afterwards (none, normally)."""
    def targets() -> list[int]:
        return [p.pid for p in owned(prefix) if p.pid != keep]

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        pids = targets()
        if not pids:
            return []
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not [pid for pid in targets() if is_alive(pid)]:  # is_alive reaps our own
                return []
            time.sleep(0.05)
    return targets()


def is_alive(pid: int | None) -> TypeGuard[int]:  # True: pid is a (live process's) int
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _status = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def stop_process(pid: int | None, timeout: float = 10.0) -> bool:
    """Stop a process and its group: SIGTERM, then SIGKILL after `timeout`. True if gone."""
    if not is_alive(pid):
        return True
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not is_alive(pid):
                return True
            time.sleep(0.05)
    return not is_alive(pid)


def wait_ready(url: str, pid: int, timeout: float, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; raise RuntimeError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not is_alive(pid):
            tail = log_tail(log) if log else ""
            raise RuntimeError(f"the process exited before it was ready{tail}")
        answer = http_status(url)
        if answer == 200:
            return
        last = f"HTTP {answer}" if isinstance(answer, int) else answer
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:g} s ({last}){log_tail(log) if log else ''}")


def wait_reported(status: Path, pid: int, timeout: float, log: Path, what: str) -> dict:
    """Wait until the supervisor `pid` reports `what` ready in its status file (JSON with a
    `state`); returns the report. RuntimeError when it reports failed, exits first, or time
    runs out (with the tail of its log)."""
    deadline = time.monotonic() + timeout
    report: dict = {}
    while time.monotonic() < deadline:
        try:
            report = json.loads(status.read_text())
        except (OSError, ValueError):
            report = {}
        if report.get("state") == "ready":
            return report
        if report.get("state") == "failed":
            raise RuntimeError(f"{what} did not start: {report.get('reason')}{log_tail(log)}")
        if not is_alive(pid):
            raise RuntimeError(f"the supervisor exited before {what} was ready{log_tail(log)}")
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:g} s{log_tail(log)}")


def run_followed(argv: list[str], cwd: Path, env: dict, log: Path, owner: str,
                 progress: Path | None = None, on_line=None) -> int:
    """Run a child (a deploy's worker job, a flow run) with its output in `log` and return its
    exit code; each complete JSON line it appends to `progress` goes to `on_line` as it comes.
    The child dies with this process (parent-death signal); when it ends, or this process is
    interrupted, it is killed if still running and whatever carries `owner` is stopped."""
    seen = 0
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                preexec_fn=parent_death_signal(signal.SIGKILL))
        try:
            while True:
                done = proc.poll() is not None
                if progress is not None and on_line is not None:
                    for line in progress_lines(progress, seen):
                        seen += 1
                        on_line(line)
                if done:
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stop_owned(owner, timeout=5.0)
    return proc.returncode


def progress_lines(progress: Path, seen: int) -> list[dict]:
    """The JSON lines of a progress file after the first `seen`; a line still being written
    (no newline yet) is left for the next read."""
    try:
        text = progress.read_text(encoding="utf-8")
    except OSError:
        return []
    complete = text.splitlines()[:text.count("\n")]
    return [json.loads(line) for line in complete[seen:] if line.strip()]


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- last lines of " + str(log) + " ---\n" + "\n".join(text)
