"""Judging SLOs and canary rules from samples that may be small (mlstack.ops.local.judge)."""

from __future__ import annotations

import pytest

from mlstack.frontend.analysis import analyze_spec
from mlstack.ops.local import judge
from mlstack.ops.report import freshness_rows, slo_rows
from tests.conftest import BLUEPRINTS


def test_a_percentile_needs_enough_samples():
    assert judge.min_samples(99) == 100
    assert judge.min_samples(95) == 20
    assert judge.min_samples(50) == 10


def test_binomial_tail():
    assert judge.binomial_tail(0, 10, 0.3) == 1.0
    assert judge.binomial_tail(1, 1, 0.01) == pytest.approx(0.01)
    assert judge.binomial_tail(2, 3, 0.5) == pytest.approx(0.5)
    assert judge.binomial_tail(11, 10, 0.5) == 0.0


def test_p99_from_five_requests_is_not_enough_to_be_met():
    verdict = judge.latency_within([10.0] * 5, 99, 100)
    assert verdict.ok is None and verdict.note == "not enough samples (5 of 100)"
    assert judge.latency_within([10.0] * 100, 99, 100).ok is True


def test_a_miss_is_proven_early_when_a_compliant_service_could_not_show_it():
    slow = judge.latency_within([500.0] * 5, 99, 100)
    assert slow.ok is False and slow.proven_early and "proven from 5 samples" in slow.note
    one_slow = judge.latency_within([10.0] * 30 + [500.0], 99, 100)
    assert one_slow.ok is None  # one slow request in 31: a compliant service does that


def test_canary_rules_abort_early_only_on_proof():
    assert judge.latency_breach([300.0] * 4, 99, ">", 200).ok is False
    few = [10.0] * 20 + [300.0]  # one slow request in 21: a compliant version does that
    assert judge.latency_breach(few, 99, ">", 200).ok is None
    assert judge.latency_breach(few, 99, ">", 200).note == "not enough samples (21 of 100)"
    assert judge.latency_breach([10.0] * 150, 99, ">", 200).ok is True
    assert judge.latency_breach([10.0] * 147 + [300.0] * 3, 99, ">", 200).ok is False
    assert judge.error_breach(3, 3, ">", 0.01).ok is False
    assert judge.error_breach(0, 50, ">", 0.01).ok is None
    assert judge.error_breach(0, 100, ">", 0.01).ok is True
    assert judge.error_breach(0, 0, ">", 0.01).ok is None


def test_error_rate_within_target_needs_one_over_target_requests():
    assert judge.errors_within(0, 250, 0.001).ok is None
    assert judge.errors_within(0, 1000, 0.001).ok is True
    missed = judge.errors_within(2, 250, 0.001)
    assert missed.ok is False


@pytest.fixture(scope="module")
def churn():
    return analyze_spec(BLUEPRINTS / "churn" / "mlstack.yaml").system


def test_slo_table_says_not_enough_samples_instead_of_a_verdict(churn):
    load = {"p50_ms": 10.0, "p95_ms": 12.0, "p99_ms": 14.0, "throughput_rps": 50.0,
            "error_rate": 0.0, "errors": 0, "requests": 40}
    rows = {r.slo: r for r in slo_rows(churn, load, {"auc": 0.85},
                                       latencies=[10.0] * 40)}
    assert rows["latency p50"].ok is True and rows["latency p95"].ok is True
    assert rows["latency p99"].ok is None
    assert rows["latency p99"].verdict == "not enough samples (40 of 100)"
    assert rows["error rate"].ok is None  # 0.001 needs 1000 requests
    assert rows["quality auc"].ok is True


def test_freshness_rows_judge_each_view_newest_online_row(churn):
    day = 86400
    rows = freshness_rows(day, {"views": {"customer_profile": {"age_seconds": 3 * day},
                                          "other": {"age_seconds": None}}})
    assert [(r.slo, r.measured, r.ok) for r in rows] == [
        ("freshness customer_profile", "3 d", False), ("freshness other", "no online row",
                                                       False)]
    table = slo_rows(churn, {}, {}, freshness={"views": {"customer_profile":
                                                         {"age_seconds": 60.0}}})
    assert [r.ok for r in table if r.slo.startswith("freshness")] == [True]


def test_a_failed_deploy_prints_its_slo_table(churn):
    from mlstack.cli.deploy_output import render_summary
    from mlstack.ops.report import DeployResult

    rows = slo_rows(churn, {"p50_ms": 900.0, "p95_ms": 1000.0, "p99_ms": 1100.0,
                            "throughput_rps": 30.0, "error_rate": 0.48, "errors": 48,
                            "requests": 100}, {"auc": 0.85}, latencies=[900.0] * 52)
    result = DeployResult(system="churn", version="v2", endpoint="http://127.0.0.1:3000",
                          model_tag="churn:x", changed=False, slos=rows,
                          load={"requests": 100, "errors": 48, "throughput_rps": 30.0,
                                "contention": {"cpus": 2, "load_per_cpu_before": 2.5,
                                               "load_per_cpu_after": 3.0,
                                               "cpu_busy_during": 0.97,
                                               "sender_lag_p99_ms": 80.0,
                                               "sender_lag_max_ms": 120.0}},
                          failed="stage 'verify' failed: SLO missed", serving="v1")
    text = render_summary(result)
    assert text.startswith("Not deployed: churn v2 failed; v1 serves")
    assert "latency p50" in text and "MISSED" in text
    assert "not enough samples (52 of 100)" not in text  # p99 proven missed from 52
    assert "missed, proven from 52 samples" in text
    assert "a busy machine" in text and "load generator lag p99 80 ms" in text
    assert "Next: `mlstack logs`" in text and "run `mlstack deploy` again" in text
    assert not result.slos_met
