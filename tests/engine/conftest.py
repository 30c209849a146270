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
