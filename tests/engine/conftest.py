"""Fixtures shared by the real-engine tests (feast, prefect, bentoml; no mocks)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A temporary Prefect API for the whole session (`prefect_test_harness`): flows run
    against a throwaway SQLite database, PREFECT_HOME is a private temp folder, and a fresh
    database on a busy machine gets the startup time it needs."""
    home = tmp_path_factory.mktemp("prefect_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_HOME", str(home))
        patch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        patch.setenv("DO_NOT_TRACK", "1")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield


# -- real servers on loopback: Redis and a throwaway PostgreSQL cluster ---------------------
# Debian's packages (scripts/test.sh installs them when missing, and stops when it cannot: a
# missing server fails its tests); each fixture starts its server on a free 127.0.0.1 port in
# its own folder and stops it by PID at session end.
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, alive, what: str, timeout: float = 30.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited before listening on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server on 127.0.0.1 (no persistence); yields 'host:port'."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/test.sh installs Debian's "
                    "redis-server package)", pytrace=False)
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
         "no", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, lambda: proc.poll() is None, "redis-server")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def postgres_bin_dir():
    """Debian keeps initdb/pg_ctl under /usr/lib/postgresql/<version>/bin, off PATH."""
    import glob
    import shutil
    from pathlib import Path

    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (its socket in its own folder) with a
    database `mlstack`; yields {'host', 'port', 'user', 'password', 'dbname', 'url'} where
    url is an SQLAlchemy URL for psycopg 3. PostgreSQL refuses to run as root: under root
    the cluster belongs to the `postgres` user the Debian package creates."""
    import os
    import pwd
    import secrets
    import shutil
    import signal
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed (scripts/test.sh installs Debian's "
                    "postgresql package)", pytrace=False)
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root and there is no `postgres` user to run PostgreSQL "
                        "as (it refuses root; Debian's postgresql package creates it)",
                        pytrace=False)
        as_user = ["runuser", "-u", "postgres", "--"]
    # not under pytest's tmp folder: that is private to this user (mode 0700)
    folder = Path(tempfile.mkdtemp(prefix="mlstack-postgres-"))
    password = secrets.token_hex(16)
    (folder / "password").write_text(password)
    if owner is not None:
        for path in (folder, folder / "password"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data, port, user = folder / "data", free_port(), "mlstack"

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stdout}{done.stderr}")

    pid_file = data / "postmaster.pid"
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--pwfile",
            str(folder / "password"), "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l",
            str(folder / "postgres.log"), "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off")
        run(str(bin_dir / "psql"), "-h", str(folder), "-p", str(port), "-U", user, "-d",
            "postgres", "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE mlstack")
        yield {"host": "127.0.0.1", "port": port, "user": user, "password": password,
               "dbname": "mlstack", "socket_dir": str(folder),
               "url": f"postgresql+psycopg://{user}:{password}@127.0.0.1:{port}/mlstack"}
    finally:
        if pid_file.is_file():  # stop the postmaster by its PID (SIGINT: fast shutdown)
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
            deadline = time.monotonic() + 30
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(folder, ignore_errors=True)
