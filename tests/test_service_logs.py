"""Service logs stay readable: the deprecation warning BentoML 1.4 triggers on every request
(pydantic 2.11's model_fields on an instance) is filtered in every child of a deploy, and a
user's own PYTHONWARNINGS is kept."""

from __future__ import annotations

import subprocess
import sys

from mlstack.ops.paths import ProjectPaths

EMIT = """
import warnings
from pydantic import BaseModel
class Row(BaseModel):
    id: int = 1
Row().model_fields
warnings.warn("another deprecation", DeprecationWarning)
"""


def test_the_per_request_pydantic_warning_is_filtered_and_others_are_kept(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("MLSTACK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONWARNINGS", "default::DeprecationWarning")
    (tmp_path / "mlstack.yaml").write_text("")
    env = ProjectPaths.for_spec(tmp_path / "mlstack.yaml").environment()
    assert env["PYTHONWARNINGS"].startswith("default::DeprecationWarning,")
    proc = subprocess.run([sys.executable, "-c", EMIT], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "model_fields" not in proc.stderr
    assert "another deprecation" in proc.stderr
