"""training.on_new_model by target: a scheduled retrain rolls out locally, and on kubernetes and
aws, where the generated stack has no rollout engine yet, it registers (the derivation says
what a retrain does there, and lint refuses `rollout`: tests/bad_specs)."""

from __future__ import annotations

from mlstack.frontend.analysis import require_system
from tests.conftest import BLUEPRINTS


def _derivation(system, setting: str):
    return next((d for d in system.derivations if d.setting == setting), None)


def test_a_local_retrain_rolls_out_and_a_cluster_one_registers_saying_why():
    local = require_system(BLUEPRINTS / "churn" / "mlstack.yaml")[0]
    assert local.training.on_new_model == "rollout"
    assert "canary" in _derivation(local, "training.on_new_model").reason
    cluster = require_system(BLUEPRINTS / "churn-k8s" / "mlstack.yaml")[0]
    assert cluster.training.on_new_model == "register"
    derived = _derivation(cluster, "training.on_new_model")
    assert derived.value == '"register"'
    assert "no rollout engine" in derived.reason and "next start" in derived.reason


def test_a_written_choice_is_kept_without_a_derivation(tmp_path):
    spec = tmp_path / "mlstack.yaml"
    text = (BLUEPRINTS / "churn" / "mlstack.yaml").read_text()
    spec.write_text(text.replace("training:\n", "training:\n  on_new_model: register\n", 1))
    for item in (BLUEPRINTS / "churn").iterdir():
        if item.name != "mlstack.yaml":
            (tmp_path / item.name).symlink_to(item)
    system = require_system(spec)[0]
    assert system.training.on_new_model == "register"
    assert _derivation(system, "training.on_new_model") is None
