"""scripts/env.sh's mlstack_venv: the extras scripts/test.sh installs, torch's CPU build before
the pytorch extra (from PyPI, plain torch is a CUDA build of GBs), and the stamp that makes a
second run install nothing. A fake .venv/bin/python records what pip was asked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

CONSTRAINTS = REPO / "scripts" / "constraints.txt"  # the resolver's floors, for every install
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../calls.log"
"""


def _mlstack_venv(folder: Path, extras: str) -> list[str]:
    (folder / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    subprocess.run(["bash", "-c", f"source {REPO / 'scripts' / 'env.sh'} && mlstack_venv "
                    f"'{extras}'"], cwd=folder, check=True, capture_output=True, text=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(folder)})
    log = folder / ".venv" / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_test_extras_install_cpu_torch_first_then_once(tmp_path):
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    assert 'mlstack_venv ".[runtime,test,xgboost,lightgbm,pytorch,ray]"' in test_sh
    calls = _mlstack_venv(tmp_path, ".[runtime,test,xgboost,lightgbm,pytorch,ray]")
    installs = [c for c in calls if c.startswith("-m pip install") and "--upgrade pip" not in c]
    assert installs[0] == ("-m pip install --progress-bar on --no-deps --retries 0 "
                           "torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu")
    assert installs[1] == f"-m pip install --progress-bar on -c {CONSTRAINTS} -e " \
                          ".[runtime,test,xgboost,lightgbm,pytorch,ray]"
    assert _mlstack_venv(tmp_path, ".[runtime,test,xgboost,lightgbm,pytorch,ray]") == calls  # stamp


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_without_the_pytorch_extra_no_torch_is_installed(tmp_path):
    calls = _mlstack_venv(tmp_path, ".[runtime]")
    assert not any("torch" in c for c in calls)
    assert calls[-1] == f"-m pip install --progress-bar on -c {CONSTRAINTS} -e .[runtime]"
