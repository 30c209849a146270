"""The type check runs in the test command: mypy over the package with the [tool.mypy]
configuration of pyproject.toml. Strict (the per-module flags of `mypy --strict`) on
mlstack.frontend, mlstack.diagnostics and mlstack.runtime; mypy's default mode elsewhere, with no
module's errors ignored (`ignore_errors` appears nowhere: the not-yet-clean list is gone).

mypy keeps its cache in the repository's .mypy_cache (ignored by git): a cold run checks the
installed libraries the package imports too and takes a minute or two; a warm one, seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from tests.conftest import REPO

STRICT_SCOPE = ("mlstack.frontend", "mlstack.diagnostics", "mlstack.runtime")
# the per-module flags `mypy --strict` turns on (mypy 2.4; `strict = true` in an override would
# turn strict on for every module, so the configuration lists them)
STRICT_FLAGS = {"disallow_any_generics": True, "disallow_subclassing_any": True,
                "disallow_untyped_calls": True, "disallow_untyped_defs": True,
                "disallow_incomplete_defs": True, "check_untyped_defs": True,
                "disallow_untyped_decorators": True, "warn_unused_ignores": True,
                "warn_return_any": True, "implicit_reexport": False, "strict_equality": True,
                "extra_checks": True}


def _mypy_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["mypy"]


MYPY_TEST = "tests/test_types.py::test_mypy_passes_with_the_project_configuration"
_started: list[subprocess.Popen[str]] = []  # the background run, started once


def start_mypy() -> None:
    """Start the type check in the background, at a low priority (conftest starts it when
    the collected tests include MYPY_TEST): a cold run takes a core for a minute or two, and
    the engine tests, which run first, mostly wait on services, schedules and alerts."""
    if not _started:
        _started.append(subprocess.Popen(
            [sys.executable, "-m", "mypy", "--cache-dir", str(REPO / ".mypy_cache")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: os.nice(10)))


def stop_mypy() -> None:
    """At the session's end: a background run nobody waited for is stopped."""
    for process in _started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_mypy_passes_with_the_project_configuration():
    start_mypy()  # started at collection when the whole suite runs; else now
    output, _ = _started[0].communicate(timeout=900)
    code = _started[0].returncode
    assert code == 0, f"mypy failed (exit {code}):\n{output}"
    assert "Success: no issues found" in output, output


def test_the_strict_scope_is_strict_and_whole():
    """frontend, diagnostics and runtime carry every strict flag, and no module's errors are
    ignored anywhere."""
    overrides = _mypy_config()["overrides"]
    strict = [o for o in overrides if {f"{s}.*" for s in STRICT_SCOPE} <= set(o["module"])]
    assert strict, "no override makes mlstack.frontend.* and mlstack.diagnostics.* strict"
    assert {k: strict[0].get(k) for k in STRICT_FLAGS} == STRICT_FLAGS
    assert [o["module"] for o in overrides if o.get("ignore_errors")] == []
