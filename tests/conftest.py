"""Test-wide settings: telemetry off, paths to the repo's folders."""

import os
import signal
from pathlib import Path

import pytest

# a skip fails the run unless tests/skip_allowlist.toml allows it, with a reason
# the test command's two workers share the suite by tests/xdist_plan.py
pytest_plugins = ["tests.skip_policy", "tests.xdist_plan"]

for _key, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "BENTOML_DO_NOT_TRACK": "true", "FEAST_USAGE": "False",
                     "ORT_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parent.parent
BLUEPRINTS = REPO / "blueprints"
GENERATED = REPO / "generated"


def pytest_collection_finish(session: pytest.Session) -> None:
    """The type check starts in the background as soon as the run is known to include it
    (tests/test_types.py): its minute of CPU overlaps the engine tests' waiting."""
    from tests.test_types import MYPY_TEST, start_mypy

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # every worker collects every test: the one that runs it starts it then
    if any(item.nodeid == MYPY_TEST for item in session.items):
        start_mypy()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.test_types import stop_mypy

    stop_mypy()


def ctrl_c_reaches_it() -> None:
    """A child's preexec_fn: SIGINT back to its default, as for a command started from a
    terminal. A test run started in the background (`cmd &` in a script) ignores SIGINT, and
    children inherit that, so a test's Ctrl-C would reach nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def repo() -> Path:
    return REPO


def redate_project(project: Path) -> None:
    """Move a copied blueprint's data to the present, as `mlstack init` does (the newest
    feature row now): online reads null a value older than its view's TTL, as the
    point-in-time join does, so a fixed sample older than its TTLs would serve only nulls."""
    from mlstack.workspace.blueprints import date_sample

    moved, what = date_sample(project)
    assert moved, what
