"""The CI hooks: the pre-commit hook definition and the composite GitHub Action, whose lint
step is run here for real with bash."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import BLUEPRINTS, REPO
from tests.test_lint_corpus import CORPUS
from tests.test_sarif import assert_sarif_2_1_0

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


def _step(name: str) -> dict:
    return next(s for s in ACTION["runs"]["steps"] if s.get("name") == name)


def test_action_inputs_and_steps():
    assert ACTION["runs"]["using"] == "composite"
    inputs = ACTION["inputs"]
    assert inputs["format"]["default"] == "github"
    assert inputs["strict"]["default"] == "false"
    assert inputs["upload-sarif"]["default"] == "false"
    assert set(inputs) >= {"files", "format", "strict", "output", "upload-sarif"}
    assert set(ACTION["outputs"]) >= {"findings", "errors", "warnings", "sarif-file"}
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), "inputs reach scripts through env, not as text"


def test_action_leaves_the_callers_python_alone():
    """No setup-python (it changes the Python of the caller's later steps): mlstack goes into
    a virtual environment of its own under $RUNNER_TEMP, and nothing is added to the PATH or
    the environment of later steps."""
    steps = ACTION["runs"]["steps"]
    assert not any("setup-python" in s.get("uses", "") for s in steps)
    install = _step("Install mlstack")
    assert 'venv="$RUNNER_TEMP/mlstack"' in install["run"]
    assert '"$MLSTACK_PYTHON" -m venv "$venv"' in install["run"]
    assert '"$venv/bin/python" -m pip install' in install["run"]
    for step in steps:
        assert "GITHUB_PATH" not in step.get("run", "") and "GITHUB_ENV" not in step.get("run", "")


def test_action_uploads_sarif_only_when_asked():
    upload = _step("Upload SARIF to code scanning")
    assert upload["uses"].startswith("github/codeql-action/upload-sarif@")
    assert "inputs.upload-sarif == 'true'" in upload["if"]
    assert upload["with"]["sarif_file"] == "${{ steps.lint.outputs.sarif-file }}"


def _run_lint_step(files: str, tmp_path: Path, cwd: Path = REPO,
                   **inputs) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The Lint step's script run by bash as the runner would: inputs as MLSTACK_* variables,
    $RUNNER_TEMP, $GITHUB_OUTPUT; mlstack from this venv. Returns the process and the step's
    outputs."""
    env = dict(os.environ)
    defaults = {k: v.get("default", "") for k, v in ACTION["inputs"].items()}
    values = {**defaults, **inputs, "files": files}
    for key, value in values.items():
        env[f"MLSTACK_{key.upper().replace('-', '_')}"] = str(value)
    env["MLSTACK"] = str(Path(sys.executable).with_name("mlstack"))
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    output = tmp_path / "github-output"
    output.write_text("")
    env.update(RUNNER_TEMP=str(runner_temp), GITHUB_OUTPUT=str(output))
    proc = subprocess.run(["bash", "-c", _step("Lint")["run"]], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return proc, outputs


def test_action_lint_step_annotates_findings(tmp_path):
    bad = CORPUS / "ref_unknown_entity.yaml"
    proc, outputs = _run_lint_step(f"{BLUEPRINTS / 'churn'}\n  {bad}", tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("::error file=") and "title=MLS201::" in proc.stdout
    assert outputs["errors"] != "0" and outputs["exit-code"] == "1"


@pytest.mark.parametrize(("strict", "code"), [("false", 0), ("true", 1)])
def test_action_strict_input(strict, code, tmp_path):
    proc, outputs = _run_lint_step(str(CORPUS / "slo_ttl_shorter_than_freshness.yaml"),
                                   tmp_path, strict=strict)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "::warning file=" in proc.stdout
    assert (outputs["findings"], outputs["errors"], outputs["warnings"]) == ("1", "0", "1")


def test_action_writes_its_output_to_a_file(tmp_path):
    out = tmp_path / "results.sarif"
    proc, _ = _run_lint_step(str(BLUEPRINTS / "churn" / "mlstack.yaml"), tmp_path,
                             format="sarif", output=str(out))
    assert proc.returncode == 0, proc.stderr
    assert '"version": "2.1.0"' in out.read_text()


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


@pytest.fixture
def monorepo(tmp_path) -> Path:
    """A git repository with several projects: two linted (one with a warning), and specs
    that must not be (a .gitignore'd folder, node_modules/, a build/ folder, a venv)."""
    repo = tmp_path / "monorepo"
    clean = (BLUEPRINTS / "churn" / "mlstack.yaml").read_text()
    warning = (CORPUS / "slo_ttl_shorter_than_freshness.yaml").read_text()
    broken = (CORPUS / "ref_unknown_entity.yaml").read_text()
    layout = {"services/churn/mlstack.yaml": clean, "services/ranking/mlstack.yaml": warning,
              "scratch/mlstack.yaml": broken, "node_modules/x/mlstack.yaml": broken,
              "services/churn/build/mlstack.yaml": broken, "tools/venv/mlstack.yaml": broken,
              "tools/venv/pyvenv.cfg": "home = /usr\n", ".gitignore": "scratch/\n"}
    for rel, text in layout.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "add", "services", ".gitignore")
    _git(repo, "commit", "-q", "-m", "projects")
    return repo


@pytest.mark.parametrize("files", [".", "services", "*/*/mlstack.yaml", "**/mlstack.yaml",
                                   "services/churn\nservices/ranking/mlstack.yaml"])
def test_action_lints_every_project_of_a_repository(files, monorepo, tmp_path):
    proc, outputs = _run_lint_step(files, tmp_path, cwd=monorepo, format="sarif",
                                   **{"upload-sarif": "true"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (outputs["findings"], outputs["errors"], outputs["warnings"]) == ("1", "0", "1")
    assert outputs["exit-code"] == "0"
    sarif = json.loads(Path(outputs["sarif-file"]).read_text())
    assert_sarif_2_1_0(sarif)
    (result,) = sarif["runs"][0]["results"]
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "services/ranking/mlstack.yaml" and result["ruleId"] == "MLS403"
    assert json.loads(proc.stdout) == sarif  # the log's format was sarif too


def test_action_reports_a_missing_path_with_the_other_findings(monorepo, tmp_path):
    proc, outputs = _run_lint_step("services\nmissing/mlstack.yaml", tmp_path, cwd=monorepo,
                                   **{"upload-sarif": "true"})
    assert proc.returncode == 2
    assert "title=MLS012::" in proc.stdout and "title=MLS403::" in proc.stdout
    assert (outputs["findings"], outputs["errors"], outputs["warnings"]) == ("2", "1", "1")
    sarif = json.loads(Path(outputs["sarif-file"]).read_text())
    assert_sarif_2_1_0(sarif)
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"MLS012", "MLS403"}
