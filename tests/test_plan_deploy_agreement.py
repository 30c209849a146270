"""Plan is what deploy does (Terraform's rule). For every key of the spec language: a change
that reaches the IR is visible to plan's resource diff (no field slips past it), and deploy's
decisions are the ones plan's consequences name: retries or a schedule redeploy pipelines and
retrain nothing, a model parameter retrains, a latency SLO only re-verifies."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from mlstack.frontend.analysis import analyze_spec
from mlstack.workspace.plan import Consequence, deploy_actions, diff_systems
from tests.test_spec_options import BASES, CHANGES, _apply, write_user_files

# key -> (train, new service version, verify) that deploy must do after plan's diff.
EXPECTED = {
    "Training.retries": (False, False, False),
    "Training.retry_delay_seconds": (False, False, False),
    "Training.schedule": (False, False, False),
    "Training.timeout_minutes": (False, False, False),
    "Training.on_new_model": (False, False, False),
    "Metadata.description": (False, False, False),
    "Metadata.owner": (False, False, False),
    "SourceBase.description": (False, False, False),
    "FeatureView.description": (False, False, False),
    "Drift.threshold": (False, False, False),
    "Model.params": (True, True, True),
    "Training.seed": (True, True, True),
    "Split.test_fraction": (True, True, True),
    "Transform.expr": (True, True, True),
    "Transform.python": (True, True, True),
    "Transform.inputs": (True, True, True),
    "Model.estimator": (True, True, True),
    "FeatureView.ttl": (True, True, True),
    "Checks.min_rows": (True, True, True),
    "Evaluation.gates": (True, True, True),
    "Latency.p50_ms": (False, False, True),
    "Latency.p95_ms": (False, False, True),
    "Slos.error_rate": (False, False, True),
    "Slos.availability": (False, False, True),
    "Rollout.step_seconds": (False, True, True),
    "Serving.timeout_ms": (False, True, True),
    "Batching.max_batch_size": (False, True, True),
}


def _system(doc: dict, folder):
    spec = folder / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    write_user_files(folder)
    analysis = analyze_spec(spec)
    return analysis.system


@pytest.fixture(scope="module")
def baseline_systems(tmp_path_factory) -> dict:
    return {name: _system(doc, tmp_path_factory.mktemp(name)) for name, doc in BASES.items()}


def _changed(key, tmp_path):
    base, *change = CHANGES[key]
    doc = copy.deepcopy(BASES[base])
    _apply(doc, change)
    return base, _system(doc, tmp_path)


def _ir(system) -> dict:
    data = json.loads(system.model_dump_json())
    data.pop("spec_hash", None)
    data.pop("derivations", None)  # plan lists every derivation with its previous value
    return data


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_a_change_that_reaches_the_ir_is_in_plans_diff(key, baseline_systems, tmp_path):
    base, new = _changed(key, tmp_path)
    old = baseline_systems[base]
    if new is None or _ir(new) == _ir(old):
        return  # refused by lint or reported there (tests/test_spec_options.py)
    assert diff_systems(old, new), f"{key} changes the IR but plan shows no resource change"


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_deploy_does_what_plan_says(key, baseline_systems, tmp_path):
    base, new = _changed(key, tmp_path)
    assert new is not None, key
    changes = diff_systems(baseline_systems[base], new)
    actions = deploy_actions(changes)
    assert (actions.train, actions.new_version, actions.verify) == EXPECTED[key], (
        key, [(c.kind, c.consequence, [p.name for p in c.properties]) for c in changes])
    assert len(actions.reasons) == len(changes)


def test_source_data_alone_retrains():
    actions = deploy_actions((), data_changed=True)
    assert actions.train and actions.new_version and actions.verify


def test_nothing_changed_is_nothing_to_do():
    assert deploy_actions(()).nothing


def test_a_gate_change_is_re_evaluated_by_running_the_flow():
    from mlstack.workspace.plan import NEEDS_TRAINING

    assert Consequence.REEVALUATE in NEEDS_TRAINING
