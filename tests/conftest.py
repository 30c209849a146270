"""Test-wide settings: telemetry off, paths to the repo's folders."""

import os
from pathlib import Path

import pytest

for _key, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "BENTOML_DO_NOT_TRACK": "true", "FEAST_USAGE": "False"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parent.parent
BLUEPRINTS = REPO / "blueprints"
GENERATED = REPO / "generated"


@pytest.fixture
def repo() -> Path:
    return REPO
