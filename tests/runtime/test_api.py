"""mlstack.runtime as a package: its API version check, its import cost, its boundary."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

import mlstack.runtime as runtime
from tests.conftest import REPO

RUNTIME = REPO / "mlstack" / "runtime"
HEAVY = ("pandas", "numpy", "feast", "bentoml", "prefect", "sklearn", "pyarrow", "yaml")


def test_require_accepts_this_api_and_older_minors():
    runtime.require(runtime.API_VERSION)
    major, minor = map(int, runtime.API_VERSION.split("."))
    for version in (f"{major}.0", f"{major}.{minor}"):
        runtime.require(version)


@pytest.mark.parametrize("compiled", ["0.9", "2.0", "1.99", "one", "1", ""])
def test_require_refuses_another_api_with_a_clear_message(compiled, monkeypatch):
    monkeypatch.setattr(runtime, "API_VERSION", "1.0")
    with pytest.raises(RuntimeError) as error:
        runtime.require(compiled)
    assert str(error.value) == (
        f"this project was compiled for mlstack runtime API {compiled}; the installed mlstack "
        "provides 1.0: recompile with `mlstack compile` or install a matching mlstack")


def test_compatible_is_same_major_and_a_minor_at_least_as_new():
    assert runtime.compatible("1.0", "1.3")
    assert runtime.compatible("1.3", "1.3")
    assert not runtime.compatible("1.4", "1.3")
    assert not runtime.compatible("1.0", "2.0")
    assert not runtime.compatible("2.1", "1.9")


def test_importing_the_package_loads_no_heavy_library():
    probe = ("import json, sys; import mlstack.runtime, mlstack.runtime.errors; "
             f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=True)
    assert json.loads(result.stdout) == []


def _imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module or "")
    return found


def test_runtime_imports_nothing_else_of_mlstack():
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 5
    for path in files:
        for name in _imports(path):
            if name == "mlstack" or name.startswith("mlstack."):
                assert name.startswith("mlstack.runtime"), f"{path.name} imports {name}"


def test_the_compiler_targets_this_runtime_api():
    """Generated code calls require(contract.RUNTIME_API_VERSION): it must be this runtime's."""
    from mlstack.codegen.contract import RUNTIME_API_VERSION

    assert RUNTIME_API_VERSION == runtime.API_VERSION


def test_every_project_asks_for_the_api_of_its_service_contract():
    from mlstack.codegen import contract

    # 2.6 added what every generated service calls (serving.shed_response)
    assert contract.RUNTIME_API_WITHOUT_COMPUTE == "2.6"
    assert runtime.compatible(contract.RUNTIME_API_WITHOUT_COMPUTE)
    assert not runtime.compatible(contract.RUNTIME_API_WITHOUT_COMPUTE, "2.5")
    assert not runtime.compatible(contract.RUNTIME_API_VERSION, "2.1")


def test_the_runtime_defaults_are_the_contract_names():
    from mlstack.codegen import contract
    from mlstack.runtime import hooks, pushgateway, ray_cluster, state

    assert hooks.PROGRESS_FILE_ENV == contract.ENV_PROGRESS_FILE
    assert ray_cluster.ENV_RAY_ADDRESS == contract.ENV_RAY_ADDRESS
    assert pushgateway.PUSHGATEWAY_ENV == contract.ENV_PUSHGATEWAY_URL
    assert (state.MODELS_FILE, state.TRAINING_FILE, state.MONITORING_FILE,
            state.MONITORING_HISTORY_FILE) == (
        contract.MODELS_FILE, contract.TRAINING_FILE, contract.MONITORING_FILE,
        contract.MONITORING_HISTORY_FILE)


def test_a_generated_package_compiled_for_another_api_fails_at_import(tmp_path):
    """The generated package's __init__ checks the runtime before anything else runs."""
    generated = REPO / "generated" / "churn" / "churn_system" / "__init__.py"
    text = generated.read_text()
    # the API its flows and service need (2.6), which this runtime provides
    assert 'mlstack.runtime.require("2.6")' in text
    assert runtime.compatible("2.6")
    package = tmp_path / "churn_system"
    package.mkdir()
    (package / "__init__.py").write_text(text.replace('require("2.6")', 'require("9.0")'))
    # this checkout's runtime, not an installed copy of another
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", "import churn_system"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0
    assert ("RuntimeError: this project was compiled for mlstack runtime API 9.0; the installed "
            f"mlstack provides {runtime.API_VERSION}") in proc.stderr
