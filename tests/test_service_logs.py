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


def test_logs_list_the_flow_runs_beside_the_service_and_workers(tmp_path, monkeypatch):
    """`mlstack logs` shows what `mlstack run` wrote (flow-NAME.log), not only the deploy's."""
    from mlstack.ops.local.lifecycle import log_files

    monkeypatch.setenv("MLSTACK_HOME", str(tmp_path / "home"))
    spec = tmp_path / "mlstack.yaml"
    spec.write_text("kind: System\n")
    logs = ProjectPaths.for_spec(spec).logs_dir
    logs.mkdir(parents=True)
    for name in ("service-v1.log", "router.log", "flow-monitoring.log", "flow-materialize.log",
                 "sidecar-prometheus.log", "keeper.log", "sidecar-prefect-server.log"):
        (logs / name).write_text("x\n")
    assert [p.name for p in log_files(spec, "v1")] == [
        "service-v1.log", "router.log", "flow-materialize.log", "flow-monitoring.log",
        "keeper.log", "sidecar-prefect-server.log", "sidecar-prometheus.log"]
