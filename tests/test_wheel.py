"""The built wheel works on its own: built from the repository, installed (core dependencies
only, from the package index) into a fresh venv, it lints its bundled blueprints and
scaffolds a project with `mlstack init` that lints clean."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
RUNTIME = ("prefect", "feast", "bentoml", "sklearn", "pandas")


def _run(argv, cwd: Path, timeout: int = 300, code: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLSTACK_DEBUG")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["MLSTACK_HOME"] = str(cwd / ".mlstack-home")
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == code, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(venv bin folder, the built wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(REPO)],
         cwd=tmp)
    (wheel,) = (tmp / "dist").glob("mlstack-*.whl")
    venv.create(tmp / "venv", with_pip=True)
    bin_dir = tmp / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp)
    return bin_dir, wheel


def test_wheel_carries_templates_blueprints_and_schemas(installed):
    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("templates", "blueprints", "schemas"):
        assert any(n.startswith(f"mlstack/_data/{folder}/") for n in names), folder
    assert "mlstack/_data/blueprints/churn/mlstack.yaml" in names
    assert "mlstack/_data/schemas/mlstack.schema.json" in names
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_installed_wheel_lints_its_bundled_blueprints(installed, tmp_path):
    bin_dir, _ = installed
    where = _run([str(bin_dir / "python"), "-c",
                  "import mlstack.codegen.package_data as r, mlstack; print(r.blueprints_dir()); "
                  "print(mlstack.__file__)"], cwd=tmp_path).stdout.split()
    bundled, package_file = Path(where[0]), Path(where[1])
    assert bundled.parts[-3:] == ("mlstack", "_data", "blueprints")
    assert REPO not in package_file.parents, "the test must run the installed copy"
    specs = sorted(bundled.glob("*/mlstack.yaml"))
    assert bundled / "churn" / "mlstack.yaml" in specs
    out = _run([str(bin_dir / "mlstack"), "lint", *map(str, specs)], cwd=tmp_path).stdout
    assert "0 error(s)" in out or "clean" in out
    probe = f"import importlib.util as u; print([m for m in {RUNTIME!r} if u.find_spec(m)])"
    found = _run([str(bin_dir / "python"), "-c", probe], cwd=tmp_path).stdout.strip()
    assert found == "[]", "the core install pulled in a runtime library"


def test_installed_wheel_inits_a_project_that_lints_clean(installed, tmp_path):
    bin_dir, _ = installed
    listing = _run([str(bin_dir / "mlstack"), "init", "--list"], cwd=tmp_path).stdout
    assert "churn" in listing
    _run([str(bin_dir / "mlstack"), "init", "proj", "--blueprint", "churn"], cwd=tmp_path)
    project = tmp_path / "proj"
    assert (project / "mlstack.yaml").is_file() and (project / "mlstack.schema.json").is_file()
    assert any((project / "data").glob("*.parquet"))
    out = _run([str(bin_dir / "mlstack"), "lint", "--strict", "proj/mlstack.yaml"],
               cwd=tmp_path).stdout
    assert out.strip() == "1 file clean"


def test_core_install_verbs_in_an_init_project(installed, tmp_path):
    """Without the runtime extra: the project verbs default to the current folder, the schema
    the modeline names is current, the report is written, status says 'not deployed' (not a bug), and a local deploy
    names the extra it needs (exit 2)."""
    bin_dir, _ = installed
    mlstack = str(bin_dir / "mlstack")
    _run([mlstack, "init", "proj"], cwd=tmp_path)
    project = tmp_path / "proj"
    assert {"build/", ".mlstack/"} <= set((project / ".gitignore").read_text().splitlines())
    assert _run([mlstack, "lint"], cwd=project).stdout.strip() == "1 file clean"
    assert "Plan:" in _run([mlstack, "-C", "proj", "plan"], cwd=tmp_path).stdout
    assert "up to date" in _run([mlstack, "schema", "--check"], cwd=project).stdout
    assert "Wrote the churn report" in _run([mlstack, "docs"], cwd=project).stdout
    assert (project / "build" / "docs" / "index.html").is_file()
    status = _run([mlstack, "status"], cwd=project, code=2)
    assert "has not been deployed" in status.stderr and "bug" not in status.stderr
    deploy = _run([mlstack, "deploy", "--no-verify"], cwd=project, code=2)
    assert "pip install 'mlstack[runtime]'" in deploy.stderr and "bug" not in deploy.stderr
