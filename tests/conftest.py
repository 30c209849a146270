"""Test-wide settings: telemetry off, paths to the repo's folders."""

import os
from pathlib import Path

import pytest

# a skip fails the run unless tests/skip_allowlist.toml allows it, with a reason
pytest_plugins = ["tests.skip_policy"]

for _key, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "BENTOML_DO_NOT_TRACK": "true", "FEAST_USAGE": "False",
                     "ORT_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parent.parent
BLUEPRINTS = REPO / "blueprints"
GENERATED = REPO / "generated"


@pytest.fixture
def repo() -> Path:
    return REPO


def redate_project(project: Path, newest=None) -> None:
    """Move a copied blueprint's data to the present (one offset for every timestamp, the
    newest feature row now): online reads null a value older than its view's TTL, as the
    point-in-time join does, so a fixed sample older than its TTLs would serve only nulls."""
    from mlstack.frontend.analysis import require_system
    from mlstack.runtime.sources import redate_files

    system, _ = require_system(project / "mlstack.yaml")
    files = sorted({s.path for s in system.sources if s.path and s.kind == "parquet"})
    features = sorted({system.source(v.source).path for v in system.feature_views})
    redate_files([project / f for f in files], newest, anchor=[project / f for f in features])
