"""The isolated infra environment (mlstack.ops.cluster.infra_env) and deploy without terraform.

Real venvs and pip: a requirements file with nothing to install keeps these fast; the
cdktn environments themselves are exercised by the aws/kubernetes tests (same cache).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from mlstack.ops.cluster.infra_env import READY, InfraEnvError, ensure_env, env_key, synth
from mlstack.ops.cluster.terraform import InfraToolMissing, deploy_infra
from tests.conftest import BLUEPRINTS
from tests.engine.infra_fixtures import (
    Synthesized,
    blueprints_of,
    infra_cache,  # noqa: F401  (fixture)
    infra_envs,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.engine]


def test_env_key_follows_requirements_not_their_order_or_comments():
    assert env_key("a==1\nb==2\n") == env_key("# pinned\nb==2\n\na==1  # why\n")
    assert env_key("a==1\n") != env_key("a==2\n")


def test_env_is_created_once_then_reused_and_rebuilt_when_incomplete(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv("MLSTACK_CACHE_DIR", str(tmp_path / "cache"))
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# nothing to install: the venv alone\n")
    messages: list[str] = []
    first = ensure_env(reqs, progress=messages.append)
    assert first.created and first.python.is_file() and (first.path / READY).is_file()
    assert first.path.parent == tmp_path / "cache" / "infra-envs"
    assert any("creating" in m for m in messages) and any("ready" in m for m in messages)
    started = time.monotonic()
    again = ensure_env(reqs, progress=messages.append)
    assert not again.created and again.path == first.path
    assert time.monotonic() - started < 5
    (first.path / READY).unlink()  # an interrupted creation is redone, not trusted
    assert ensure_env(reqs).created
    assert capsys.readouterr() == ("", "")  # library code never prints


def test_install_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSTACK_CACHE_DIR", str(tmp_path / "cache"))
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("./no-such-local-package-dir\n")
    with pytest.raises(InfraEnvError, match="could not install the infra requirements"):
        ensure_env(reqs)
    assert not list((tmp_path / "cache" / "infra-envs").glob(f"*/{READY}"))


def test_synth_refuses_a_tree_without_infra(tmp_path):
    with pytest.raises(InfraEnvError, match="has no infra app"):
        synth(tmp_path)


KUBE = blueprints_of("kubernetes")


@pytest.mark.skipif(not KUBE, reason="no kubernetes blueprint")
def test_deploy_without_terraform_stops_after_synth(infra_envs, tmp_path,  # noqa: F811
                                                    monkeypatch):
    compiled = Synthesized(BLUEPRINTS / KUBE[0] / "mlstack.yaml", tmp_path / "out")
    bin_dir = tmp_path / "bin"  # a PATH with node (cdktn needs it) and no terraform/tofu
    bin_dir.mkdir()
    os.symlink(shutil.which("node"), bin_dir / "node")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(InfraToolMissing) as caught:
        deploy_infra(compiled.out, dry_run=True)
    assert "neither terraform nor tofu" in caught.value.message
    stack = Path(compiled.result.path)
    assert stack.is_file() and str(stack.parent) in caught.value.hint
