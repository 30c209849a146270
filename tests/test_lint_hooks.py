"""The CI hooks: the pre-commit hook definition and the composite GitHub Action, whose lint
step is run here for real with bash."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import BLUEPRINTS, REPO
from tests.test_lint_corpus import CORPUS

HOOKS = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
ACTION = yaml.safe_load((REPO / "action.yml").read_text())


def test_pre_commit_hook():
    (hook,) = [h for h in HOOKS if h["id"] == "mlstack-lint"]
    assert hook["entry"] == "mlstack lint" and hook["language"] == "python"
    files = re.compile(hook["files"])
    for path in ("mlstack.yaml", "blueprints/churn/mlstack.yaml", "a/b/mlstack.yml"):
        assert files.search(path), path
    for path in ("values.yaml", "not-mlstack.yaml", "mlstack.yaml.bak", ".github/ci.yml"):
        assert not files.search(path), path
    assert hook.get("pass_filenames", True)


def test_action_inputs_and_steps():
    assert ACTION["runs"]["using"] == "composite"
    inputs = ACTION["inputs"]
    assert inputs["format"]["default"] == "github"
    assert inputs["strict"]["default"] == "false"
    assert set(inputs) >= {"files", "format", "strict"}
    steps = ACTION["runs"]["steps"]
    install = next(s for s in steps if s.get("name") == "Install mlstack")
    assert "pip install" in install["run"]
    lint = next(s for s in steps if s.get("name") == "Lint")
    assert "${{" not in lint["run"], "inputs must reach the script through env, not as text"


def _run_lint_step(files: str, tmp_path: Path, **inputs) -> subprocess.CompletedProcess:
    lint = next(s for s in ACTION["runs"]["steps"] if s.get("name") == "Lint")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    defaults = {k: v.get("default", "") for k, v in ACTION["inputs"].items()}
    values = {**defaults, **inputs, "files": files}
    for key, value in values.items():
        env[f"MLSTACK_{key.upper()}"] = str(value)
    return subprocess.run(["bash", "-c", lint["run"]], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_action_lint_step_annotates_findings(tmp_path):
    bad = CORPUS / "ref_unknown_entity.yaml"
    proc = _run_lint_step(f"{BLUEPRINTS / 'churn'}\n  {bad}", tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("::error file=") and "title=MLS201::" in proc.stdout


@pytest.mark.parametrize(("strict", "code"), [("false", 0), ("true", 1)])
def test_action_strict_input(strict, code, tmp_path):
    proc = _run_lint_step(str(CORPUS / "slo_ttl_shorter_than_freshness.yaml"), tmp_path,
                          strict=strict)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "::warning file=" in proc.stdout


def test_action_writes_sarif_to_a_file(tmp_path):
    out = tmp_path / "results.sarif"
    proc = _run_lint_step(str(BLUEPRINTS / "churn" / "mlstack.yaml"), tmp_path,
                          format="sarif", output=str(out))
    assert proc.returncode == 0, proc.stderr
    assert '"version": "2.1.0"' in out.read_text()
