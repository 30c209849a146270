"""Background processes a deploy starts (services, the router): start, wait, stop by PID.

Standard library only: status, down, rollback and logs run from the core install (the HTTP
client of the load test, httpx, comes with the `runtime` extra)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
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


def start_background(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> int:
    """Start a detached process (its own session/process group); returns its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def is_alive(pid: int | None) -> bool:
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


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- last lines of " + str(log) + " ---\n" + "\n".join(text)
