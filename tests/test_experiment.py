"""A/B experiments on the local target (mlstack.ops.local.experiment): started with a sticky
split in the router's table, each arm's outcomes read from the prediction log joined with
POST /feedback, looked at by the mSPRT, and the decision carried out (the candidate promoted,
or the control kept); lint refuses what cannot work; status renders the readout."""

from __future__ import annotations

import copy
import json
import random

import pytest
import yaml

from mlstack.cli.living_output import render_experiment
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.ir.nodes import AbNode, FeedbackGuardNode
from mlstack.frontend.loader import load_spec_file
from mlstack.ops.local import experiment
from mlstack.ops.local.services import router_config
from mlstack.ops.local.state import DeploymentState, Version, VersionStatus
from mlstack.workspace.plan import rollout_phrase
from tests.conftest import BLUEPRINTS
from tests.test_supervision import throwaway_project

AB = AbNode(key="customer_id", split=50, metric="conversion", higher_is_better=True,
            baseline=0.3, minimum_lift=0.3, tau=0.09, alpha=0.05, min_samples=100,
            max_samples=100_000, max_duration_seconds=14 * 86400)


@pytest.fixture
def project(tmp_path, monkeypatch):
    yield from throwaway_project(tmp_path, monkeypatch)


def _state(paths) -> DeploymentState:
    state = DeploymentState(versions=[
        Version("v1", port=45001, status=VersionStatus.SERVING),
        Version("v2", port=45002, status=VersionStatus.READY)], current="v1")
    state.save(paths.deployments_file)
    return state


def _serve_and_feed(paths, rates: dict[str, float], per_arm: int, seed: int = 7) -> None:
    """What the two versions would log for `per_arm` requests each (one row, keyed by a
    customer), and the 0/1 outcome each request's client sent back, converting at the arm's
    rate."""
    from mlstack.runtime.feedback import FeedbackStore
    from mlstack.runtime.prediction_log import PredictionLog, new_request_id

    folder = paths.runtime_state_dir / "prediction_log"
    rng = random.Random(seed)
    store, outcomes = None, []
    for version, rate in rates.items():
        log = PredictionLog(folder, version, f"churn:{version}", flush_seconds=0.05)
        for i in range(per_arm):
            request_id = new_request_id()
            assert log.record(request_id, "predict", [{"customer_id": i}], [0.5])
            outcomes.append((request_id, int(rng.random() < rate)))
        assert log.flush(20)
        log.close()
    store = FeedbackStore(folder)
    for request_id, outcome in outcomes:
        assert store.record(request_id, outcome).status == "stored"
    store.close()


def test_an_experiment_starts_with_a_sticky_split_in_the_routers_table(project):
    state = _state(project)
    started = experiment.start(state, project, system="churn", control="v1", candidate="v2",
                               ab=AB)
    table = json.loads(router_config(project).read_text())
    assert {b["version"]: b["weight"] for b in table["backends"]} == {"v1": 50, "v2": 50}
    assert table["sticky"] == {"experiment": "churn-v2-vs-v1", "key": "customer_id"}
    saved = DeploymentState.load(project.deployments_file)
    assert saved.experiment["status"] == "running" and saved.experiment == started
    assert saved.history[-1]["event"] == "experiment-started"


def test_the_keeper_waits_for_samples_then_promotes_the_better_candidate(project):
    state = _state(project)
    experiment.start(state, project, system="churn", control="v1", candidate="v2", ab=AB)
    _serve_and_feed(project, {"v1": 0.2, "v2": 0.5}, per_arm=40)
    assert experiment.advance(project, state) == []  # 40 per arm, below min_samples 100
    readout = state.experiment["readout"]
    assert readout["decision"] == "continue" and "waiting for 100 samples" in readout["reason"]
    assert readout["arms"]["v1"]["n"] == 40 and readout["arms"]["v2"]["n"] == 40

    _serve_and_feed(project, {"v1": 0.2, "v2": 0.5}, per_arm=400, seed=8)
    done = experiment.advance(project, state)
    assert len(done) == 1 and done[0].startswith("promoted v2 by the A/B readout")
    saved = DeploymentState.load(project.deployments_file)
    assert (saved.current, saved.previous, saved.routes) == ("v2", "v1", {"v2": 100})
    assert saved.get("v2").status == VersionStatus.SERVING
    assert saved.get("v1").status == VersionStatus.STOPPED
    trial = saved.experiment
    assert (trial["status"], trial["outcome"]) == ("ended", "promote")
    readout = trial["readout"]
    assert readout["effect"] > 0 and readout["effect_low"] > 0  # the interval excludes 0
    assert readout["p_value"] < AB.alpha
    table = json.loads(router_config(project).read_text())
    assert "sticky" not in table and [b["version"] for b in table["backends"]] == ["v2"]
    assert experiment.advance(project, saved) == []  # ended: nothing more to do


def test_a_worse_candidate_is_aborted_and_the_control_keeps_serving(project):
    state = _state(project)
    experiment.start(state, project, system="churn", control="v1", candidate="v2", ab=AB)
    _serve_and_feed(project, {"v1": 0.5, "v2": 0.2}, per_arm=400)
    done = experiment.advance(project, state)
    assert done and done[0].startswith("kept v1 by the A/B readout (abort")
    saved = DeploymentState.load(project.deployments_file)
    assert (saved.current, saved.routes) == ("v1", {"v1": 100})
    assert saved.get("v2").status == VersionStatus.ROLLED_BACK
    assert saved.experiment["outcome"] == "abort"


def test_equal_arms_do_not_decide_and_an_outcome_that_is_not_a_conversion_is_left_out(project):
    state = _state(project)
    experiment.start(state, project, system="churn", control="v1", candidate="v2", ab=AB)
    _serve_and_feed(project, {"v1": 0.3, "v2": 0.3}, per_arm=300)
    from mlstack.runtime.feedback import FeedbackStore
    from mlstack.runtime.prediction_log import PredictionLog, new_request_id

    folder = project.runtime_state_dir / "prediction_log"
    log = PredictionLog(folder, "v2", "churn:v2", flush_seconds=0.05)
    odd = new_request_id()
    assert log.record(odd, "predict", [{"customer_id": 1}], [0.5])
    assert log.flush(20)
    log.close()
    assert FeedbackStore(folder).record(odd, 3.5).status == "stored"
    assert experiment.advance(project, state) == []
    readout = state.experiment["readout"]
    assert readout["decision"] == "continue" and readout["invalid_outcomes"] == 1
    assert readout["effect_low"] < 0 < readout["effect_high"]


def test_only_answers_since_the_start_count(project):
    """What the versions answered before the experiment started (a shadow, a canary, the
    deploy's own load) is not an arm's outcome."""
    state = _state(project)
    _serve_and_feed(project, {"v1": 0.1, "v2": 0.9}, per_arm=200)
    experiment.start(state, project, system="churn", control="v1", candidate="v2", ab=AB)
    assert experiment.advance(project, state) == []
    arms = state.experiment["readout"]["arms"]
    assert (arms["v1"]["n"], arms["v2"]["n"]) == (0, 0)


@pytest.mark.parametrize(("outcome", "conversion", "number"), [
    (True, True, 1.0), (False, True, 0.0), (1, True, 1.0), (0.0, True, 0.0),
    ("true", True, 1.0), (" FALSE ", True, 0.0), (2, True, None), ("yes", True, None),
    (float("nan"), True, None), (None, True, None), (2.5, False, 2.5), ("1.5", False, 1.5),
    (float("inf"), False, None), ([1], False, None)])
def test_an_outcome_becomes_the_tests_number(outcome, conversion, number):
    assert experiment.outcome_number(outcome, conversion) == number


def test_status_renders_the_readout_with_its_interval():
    trial = {"name": "churn-v2-vs-v1", "status": "running", "candidate": "v2", "split": 50,
             "key": "customer_id", "started_at": 1000.0, "readout": {
                 "arms": {"v1": {"n": 400, "mean": 0.2}, "v2": {"n": 410, "mean": 0.31}},
                 "settings": {"control": "v1", "candidate": "v2", "metric": "conversion"},
                 "effect": 0.11, "effect_low": 0.03, "effect_high": None, "alpha": 0.05,
                 "relative_lift": 0.55, "p_value": 0.004, "looks": 12, "decision": "promote",
                 "reason": "promote: always-valid p=0.004 < alpha=0.05"}}
    assert render_experiment(trial, now=1090.0) == [
        "  A/B experiment churn-v2-vs-v1: running, v2 on 50% of customer_id, started "
        "90 s ago",
        "    v1       control   n 400     conversion 0.2",
        "    v2       candidate n 410     conversion 0.31",
        "    effect +0.11 [+0.03, +inf] (95% always-valid), lift +55.0%; p 0.004 after 12 "
        "looks",
        "    decision: promote: always-valid p=0.004 < alpha=0.05"]
    assert render_experiment({}) == []


# -- the spec: lint and plan ----------------------------------------------------------------

CHURN = load_spec_file(BLUEPRINTS / "churn" / "mlstack.yaml").data


def _lint(rollout: dict, tmp_path, **top) -> tuple[object, list[tuple[str, str]]]:
    doc = copy.deepcopy(CHURN)
    doc["serving"]["rollout"] = rollout
    doc.update(top)
    spec = tmp_path / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    analysis = analyze_spec(spec)
    return analysis.system, [(d.code, d.message) for d in analysis.diagnostics
                             if d.severity.value == "error"]


def test_a_valid_ab_and_shadow_lint_clean_and_plan_says_what_deploy_does(tmp_path):
    system, errors = _lint({"strategy": "ab", "ab": {"baseline": 0.1, "split": 20}}, tmp_path)
    assert errors == []
    ab = system.serving.rollout.ab
    assert (ab.key, ab.split, ab.tau) == ("customer_id", 20, pytest.approx(0.01))
    assert rollout_phrase(system.serving.rollout) == (
        "start an A/B experiment with 20% of customer_id on it, promoted or aborted by the "
        "keeper on the conversion readout (local target only)")
    system, errors = _lint({"strategy": "shadow"}, tmp_path)
    assert errors == [] and system.serving.rollout.shadow.min_requests == 100
    assert rollout_phrase(system.serving.rollout).startswith(
        "shadow it on a mirrored copy of the traffic and promote it at agreement >= 0.95")


@pytest.mark.parametrize(("rollout", "message"), [
    ({"strategy": "canary", "steps": [5, 100], "shadow": {"tolerance": 0.1}},
     "rollout.shadow is set but the strategy is canary"),
    ({"strategy": "shadow", "ab": {"baseline": 0.1}}, "rollout.ab is set but the strategy"),
    ({"strategy": "ab"}, "strategy ab needs its experiment"),
    ({"strategy": "ab", "ab": {"baseline": 0.1, "key": "user"}},
     "the A/B key 'user' is not a field of the requests (customer_id)"),
    ({"strategy": "ab", "ab": {"baseline": 1.5}}, "a conversion rate's baseline is below 1"),
    ({"strategy": "ab", "ab": {"baseline": 0.1, "min_samples": 10, "max_samples": 5}},
     "min_samples (10) is above max_samples (5)"),
    ({"strategy": "shadow", "shadow": {"min_agreement": "<= 0.5"}},
     "min_agreement is a fraction the candidate must reach"),
    ({"strategy": "ab", "steps": [10, 100], "ab": {"baseline": 0.1}},
     "ab rollout takes no intermediate steps"),
])
def test_lint_refuses_what_cannot_work(rollout, message, tmp_path):
    _, errors = _lint(rollout, tmp_path)
    assert any(message in text for _, text in errors), errors


def test_an_ab_test_needs_the_prediction_log_and_the_local_target(tmp_path):
    monitoring = {**CHURN["monitoring"], "prediction_log": {"enabled": False}}
    _, errors = _lint({"strategy": "ab", "ab": {"baseline": 0.1}}, tmp_path,
                      monitoring=monitoring)
    assert ("MLS409", "an A/B test reads its outcomes from the prediction log, and the log "
            "is off") in errors
    _, errors = _lint({"strategy": "shadow"}, tmp_path,
                      target={"kind": "kubernetes"})
    assert any(code == "MLS901" and "rollout strategy shadow is not supported yet on the "
               "kubernetes target" in text for code, text in errors), errors


# -- the shadow's rules ------------------------------------------------------------------------

def _shadow_rollout(tmp_path):
    system, errors = _lint({"strategy": "shadow", "abort_if": {
        "latency_p99_ms": "> 50", "error_rate": "> 0.01"},
        "shadow": {"min_agreement": ">= 0.9", "min_requests": 100}}, tmp_path)
    assert errors == []
    return system.serving.rollout


GOOD = {"mirrored": 400, "dropped": 0, "errors": 0, "agreement": 0.97, "rows_compared": 400,
        "shadow_latency_ms": {"p50": 5.0, "p95": 9.0, "p99": 20.0, "n": 400}}


@pytest.mark.parametrize(("change", "failed", "measured"), [
    ({}, None, None),
    ({"agreement": 0.85}, "agreement >= 0.9", "0.8500 over 400 answers"),
    ({"agreement": None, "rows_compared": 0}, "agreement >= 0.9", "no answer could be compared"),
    ({"mirrored": 60}, "at least 100 mirrored requests", "60 mirrored, 0 dropped"),
    ({"errors": 40}, "error rate > 0.01 aborts", "40 errors of 400"),
    ({"shadow_latency_ms": {"p99": 80.0, "n": 400}}, "p99 > 50 ms aborts", "80.0 ms over 400"),
])
def test_a_shadow_is_promoted_only_when_every_rule_passes(change, failed, measured, tmp_path):
    from mlstack.ops.local.stages.rollout import shadow_verdicts

    verdicts = shadow_verdicts(_shadow_rollout(tmp_path), {**GOOD, **change})
    assert [rule for rule, ok, _ in verdicts] == [
        "at least 100 mirrored requests", "error rate > 0.01 aborts", "p99 > 50 ms aborts",
        "agreement >= 0.9"]
    breaches = [(rule, figure) for rule, ok, figure in verdicts if ok is False]
    assert breaches == ([] if failed is None else [(failed, measured)])


def test_a_shadow_p99_from_too_few_answers_is_not_judged(tmp_path):
    from mlstack.ops.local.stages.rollout import shadow_verdicts

    stats = {**GOOD, "shadow_latency_ms": {"p99": 80.0, "n": 40}}
    verdicts = dict((rule, ok) for rule, ok, _ in shadow_verdicts(_shadow_rollout(tmp_path),
                                                                  stats))
    assert verdicts["p99 > 50 ms aborts"] is None


# -- a canary held on feedback (rollout.feedback) ----------------------------------------------

GUARD = FeedbackGuardNode(weight=25, metric="conversion", higher_is_better=True, baseline=0.3,
                          minimum_lift=0.3, tau=0.09, alpha=0.05, min_samples=100,
                          max_samples=300, max_duration_seconds=86400)


def _hold(project) -> DeploymentState:
    state = _state(project)
    experiment.hold_canary(state, project, system="churn", control="v1", candidate="v2",
                           guard=GUARD)
    return state


def test_a_held_canary_keeps_its_share_drawn_at_random_and_is_recorded_as_a_guard(project):
    _hold(project)
    table = json.loads(router_config(project).read_text())
    assert {b["version"]: b["weight"] for b in table["backends"]} == {"v1": 75, "v2": 25}
    assert "sticky" not in table  # a canary's requests are not assigned by key
    saved = DeploymentState.load(project.deployments_file)
    trial = saved.experiment
    assert (trial["kind"], trial["status"], trial["split"], trial["key"]) == (
        "canary", "running", 25, None)
    assert saved.history[-1]["event"] == "experiment-started"
    assert saved.history[-1]["kind"] == "canary"


def test_a_canary_that_converts_worse_is_rolled_back_by_the_keepers_look(project):
    state = _hold(project)
    _serve_and_feed(project, {"v1": 0.5, "v2": 0.2}, per_arm=250)
    done = experiment.advance(project, state)
    assert done and done[0].startswith("kept v1 by the canary's feedback readout (abort")
    saved = DeploymentState.load(project.deployments_file)
    assert (saved.current, saved.routes) == ("v1", {"v1": 100})
    assert saved.get("v2").status == VersionStatus.ROLLED_BACK


def test_a_canary_with_no_harm_found_is_promoted_when_its_budget_ends(project):
    state = _hold(project)
    _serve_and_feed(project, {"v1": 0.3, "v2": 0.3}, per_arm=300)  # max_samples: undecided
    done = experiment.advance(project, state)
    assert done and done[0].startswith("promoted v2 by the canary's feedback readout "
                                       "(no harm found: max_samples 300 reached"), done
    saved = DeploymentState.load(project.deployments_file)
    assert (saved.current, saved.previous, saved.routes) == ("v2", "v1", {"v2": 100})
    assert saved.experiment["outcome"] == "promote"


def test_a_canary_with_too_little_feedback_by_its_deadline_is_rolled_back(project):
    state = _hold(project)
    _serve_and_feed(project, {"v1": 0.3, "v2": 0.3}, per_arm=30)
    assert experiment.advance(project, state) == []  # waiting for samples
    late = state.experiment["started_at"] + GUARD.max_duration_seconds + 1
    done = experiment.advance(project, state, now=late)
    assert done and "too little feedback: max_duration 86400s reached with v1 30, v2 30 " \
        "outcomes, fewer than min_samples 100; keeping v1" in done[0], done
    assert DeploymentState.load(project.deployments_file).current == "v1"


def test_status_names_a_guard_and_its_share_of_the_requests():
    trial = {"name": "churn-v2-canary", "kind": "canary", "status": "running",
             "candidate": "v2", "split": 25, "key": None, "started_at": 1000.0}
    assert render_experiment(trial, now=1030.0)[0] == (
        "  canary feedback guard churn-v2-canary: running, v2 on 25% of the requests, "
        "started 30 s ago")


def test_a_canary_guard_lints_clean_and_plan_says_where_it_holds(tmp_path):
    system, errors = _lint({"strategy": "canary", "steps": [5, 25, 100],
                            "feedback": {"baseline": 0.1, "max_duration": "2h"}}, tmp_path)
    assert errors == []
    guard = system.serving.rollout.feedback
    assert (guard.weight, guard.tau, guard.max_duration_seconds) == (
        25, pytest.approx(0.01), 7200)
    assert rollout_phrase(system.serving.rollout) == (
        "roll it out in canary steps 5% -> 25% -> 100%, held at 25% until the keeper's test "
        "of the conversion feedback decides (local target only)")


@pytest.mark.parametrize(("rollout", "top", "message"), [
    ({"strategy": "ab", "ab": {"baseline": 0.1}, "feedback": {"baseline": 0.1}}, {},
     "rollout.feedback judges a canary, and the strategy is ab"),
    ({"strategy": "canary", "steps": [100], "feedback": {"baseline": 0.1}}, {},
     "rollout.feedback holds the canary's last step below 100%, and the steps have none"),
    ({"strategy": "canary", "steps": [10, 100], "feedback": {"baseline": 2}}, {},
     "a conversion rate's baseline is below 1"),
    ({"strategy": "canary", "steps": [10, 100], "feedback": {"baseline": 0.1}},
     {"monitoring": {**CHURN["monitoring"], "prediction_log": {"enabled": False}}},
     "a canary's feedback guard reads its outcomes from the prediction log"),
    ({"strategy": "canary", "steps": [10, 100], "feedback": {"baseline": 0.1}},
     {"target": {"kind": "kubernetes"}},
     "rollout.feedback is not supported yet on the kubernetes target"),
])
def test_lint_refuses_a_guard_that_cannot_work(rollout, top, message, tmp_path):
    _, errors = _lint(rollout, tmp_path, **top)
    assert any(message in text for _, text in errors), errors
