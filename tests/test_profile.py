"""Batching derived from a measured cost profile (mlstack.ops.local.profile): on and never
holding while the p99 budget has room (the reasons say whether the throughput needs batches),
sizes with headroom over the batch's cost;
what plan --explain and status show; a spec's fixed batching is kept."""

from __future__ import annotations

import copy
import json
import time

from mlstack.frontend.analysis import require_system
from mlstack.frontend.ir.catalog import HTTP_OVERHEAD_MS
from mlstack.frontend.ir.derive import BATCH_SIZES, THROUGHPUT_HEADROOM, choose_batching
from mlstack.frontend.loader import load_spec_file
from mlstack.ops.local.profile import derive_profile, explain_lines, read_profile, summary
from tests.conftest import BLUEPRINTS

FAST = {1: 0.3, **{n: 0.3 + 0.04 * n for n in BATCH_SIZES}}  # ms per call, by batch size


def test_on_without_holding_when_one_process_sustains_the_rate_unbatched():
    """The batcher never holds a request, so batching costs no wait at a low rate: it stays
    on, and the reason says batches form only under bursts."""
    choice = choose_batching(rate_rps=50, p99_ms=100, call_ms=FAST, http_ms=5)
    assert choice.enabled and choice.max_batch_size == 128
    setting, value, reason = choice.reasons[0]
    assert setting == "serving.batching.enabled" and value is True
    assert "189 rps" in reason and f"at least 50 rps x {THROUGHPUT_HEADROOM:g} headroom" in reason
    assert "no request waits for a batch to fill" in reason
    assert not any(s == "serving.batching.capacity_rps" for s, _, _ in choice.reasons)
    busy = choose_batching(rate_rps=400, p99_ms=100, call_ms=FAST, http_ms=5)
    assert f"under 400 rps x {THROUGHPUT_HEADROOM:g} headroom" in busy.reasons[0][2]


def test_on_with_headroom_over_the_batch_cost_not_the_whole_p99():
    choice = choose_batching(rate_rps=400, p99_ms=100, call_ms=FAST, http_ms=2)
    assert choice.enabled
    assert choice.max_batch_size == 128  # 0.3 + 5.12 ms fits a quarter of 98 ms
    assert choice.max_latency_ms == int(100 - 2 - 2 * FAST[128])
    slow = {n: 10.0 * n for n in (1, *BATCH_SIZES)}
    choice = choose_batching(rate_rps=400, p99_ms=100, call_ms=slow, http_ms=2)
    assert choice.max_batch_size == 2 and choice.max_latency_ms == 100 - 2 - 40
    assert any(s == "serving.batching.capacity_rps" for s, _, _ in choice.reasons)
    none = choose_batching(rate_rps=400, p99_ms=20, call_ms=slow, http_ms=2)
    assert not none.enabled and "no room" in none.reasons[0][2]


def _system(batching):
    doc = copy.deepcopy(load_spec_file(BLUEPRINTS / "churn" / "mlstack.yaml").data)
    doc["serving"]["batching"] = batching
    return doc


def test_profile_applies_to_derived_batching_only(tmp_path):
    system, _ = require_system(BLUEPRINTS / "churn" / "mlstack.yaml")
    measured = {"call_ms": {str(n): ms for n, ms in FAST.items()},
                "runtime": {"runtime": "onnx", "reason": "ONNX export matches"}}
    profile = derive_profile(system, measured, rate_rps=50)
    p99 = system.slos.p99_ms
    latency = int(p99 - HTTP_OVERHEAD_MS - 2 * FAST[128])
    assert profile["batching"] == {"enabled": True, "max_batch_size": 128,
                                   "max_latency_ms": latency}
    assert profile["compiled_batching"]["enabled"] is True
    text = "\n".join(explain_lines(profile, "v3"))
    assert text.startswith(f"Measured at deploy (v3): batching 128 rows / {latency} ms; "
                           "one call 0.30 ms (1 row)")
    assert "serving.batching.enabled = true" in text and "model runtime = onnx" in text
    assert "holding no request" in text
    busy = derive_profile(system, measured, rate_rps=400)
    assert busy["batching"]["enabled"] and summary(busy).startswith("batching 128 rows / ")

    spec = tmp_path / "mlstack.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(_system({"mode": "fixed", "max_batch_size": 8,
                                            "max_latency_ms": 30})))
    (tmp_path / "data").symlink_to(BLUEPRINTS / "churn" / "data")
    fixed, _ = require_system(spec)
    kept = derive_profile(fixed, measured, rate_rps=50)
    assert kept["batching"] == {"enabled": True, "max_batch_size": 8, "max_latency_ms": 30}
    assert "fixed by the spec" in kept["reasons"][0]["reason"]


def test_read_profile(tmp_path):
    class Paths:
        versions_dir = tmp_path

    (tmp_path / "v1").mkdir()
    assert read_profile(Paths, "v1") is None and read_profile(Paths, None) is None
    (tmp_path / "v1" / "serving_profile.json").write_text(json.dumps({"batching": {}}))
    assert read_profile(Paths, "v1") == {"batching": {}}


def test_a_slow_call_is_measured_within_the_budget_but_never_under_the_minimum_rounds():
    from mlstack.ops.local.profile import PROFILE_MIN_ROUNDS, time_rounds

    calls = []

    def call(batch):  # 20 ms a call: 4 sizes x 25 rounds would take 2 s
        calls.append(len(batch))
        time.sleep(0.02)

    timings = time_rounds(call, lambda n: [0] * n, (1, 2, 4, 8), rounds=25, budget_s=0.3)
    rounds = {len(v) for v in timings.values()}
    assert rounds == {PROFILE_MIN_ROUNDS}  # the budget spent long before: the minimum
    assert calls[:12] == [1, 2, 4, 8] * 3  # warmed up, then interleaved rounds
    assert all(all(ms >= 20 for ms in v) for v in timings.values())

    fast = time_rounds(lambda batch: None, lambda n: [0] * n, (1, 2), rounds=25, budget_s=5)
    assert {len(v) for v in fast.values()} == {25}  # a fast call gets every round


def test_call_cost_interpolates_between_measured_sizes_and_extends_past_the_largest():
    from mlstack.frontend.ir.derive import call_cost

    assert call_cost(FAST, 1) == FAST[1] and call_cost(FAST, 16) == FAST[16]
    assert abs(call_cost(FAST, 20) - (FAST[16] + (FAST[32] - FAST[16]) * 4 / 16)) < 1e-12
    slope = (FAST[128] - FAST[64]) / 64
    assert abs(call_cost(FAST, 200) - (FAST[128] + slope * 72)) < 1e-12


def test_rank_requests_are_sized_by_their_candidates():
    """A /rank request scores all its candidates in one call: its own cost is the call of
    that many rows, a batch holds fewer requests, and a request waits behind a full batch and
    then its own call. With 1 row per request the choice is /predict's, unchanged."""
    from mlstack.frontend.ir.derive import call_cost

    one = choose_batching(rate_rps=50, p99_ms=100, call_ms=FAST, http_ms=5)
    assert one == choose_batching(rate_rps=50, p99_ms=100, call_ms=FAST, http_ms=5,
                                  rows_per_request=1)
    ranked = choose_batching(rate_rps=50, p99_ms=100, call_ms=FAST, http_ms=5,
                             rows_per_request=20)
    assert ranked.enabled and ranked.max_batch_size == 128
    assert ranked.max_latency_ms == one.max_latency_ms  # 20 rows cost less than a full batch
    unbatched = 1000 / (5 + call_cost(FAST, 20))
    assert f"{unbatched:.0f} rps" in ranked.reasons[0][2] and "20 rows" in ranked.reasons[0][2]
    # a request larger than a full batch runs alone: its own call is the larger one
    slow = {n: 2.0 * n for n in (1, *BATCH_SIZES)}
    big = choose_batching(rate_rps=50, p99_ms=400, call_ms=slow, http_ms=5,
                          rows_per_request=100)
    assert big.max_batch_size == 32  # 64 ms fits a quarter of 395 ms, 128 does not
    assert big.max_latency_ms == int(400 - 5 - slow[32] - call_cost(slow, 100))
    # capacity counts requests of 100 rows, not rows: under the 2 x 50 rps wanted
    capacity = dict((s, v) for s, v, _ in big.reasons)["serving.batching.capacity_rps"]
    assert capacity == round(1000 / (5 + call_cost(slow, 100)))


def test_the_profile_of_a_ranking_model_derives_for_its_p90_candidates_and_explains_it():
    from mlstack.ops.local.profile import candidate_counts, rows_per_request

    counts = candidate_counts([3, 20, 20, 5, 40, 20, 20, 20, 20, 20])
    assert counts == {"median": 20.0, "p90": 20, "max": 40, "groups": 10}
    assert candidate_counts([]) is None
    assert rows_per_request({"call_ms": {}}) == 1.0
    system, _ = require_system(BLUEPRINTS / "search-ranking" / "mlstack.yaml")
    measured = {"call_ms": {str(n): 2.0 * n for n in (1, *BATCH_SIZES)},
                "runtime": {"runtime": "onnx", "reason": "ONNX export matches"},
                "candidates_per_request": counts}
    profile = derive_profile(system, measured, rate_rps=50)
    plain = derive_profile(system, {k: v for k, v in measured.items()
                                    if k != "candidates_per_request"}, rate_rps=50)
    ranked = choose_batching(rate_rps=50, p99_ms=profile["p99_ms"], call_ms={
        int(n): ms for n, ms in measured["call_ms"].items()}, rows_per_request=20)
    assert profile["batching"] == {"enabled": ranked.enabled,
                                   "max_batch_size": ranked.max_batch_size,
                                   "max_latency_ms": ranked.max_latency_ms}
    assert profile["batching"] != plain["batching"]  # 20 rows of 2 ms each leave less room
    assert any("20 rows" in r["reason"] for r in profile["reasons"])
    lines = "\n".join(explain_lines(profile, "v1"))
    assert "candidates per /rank request" in lines and "p90 20" in lines


def test_a_batchs_capacity_counts_whole_requests_of_their_candidates():
    from mlstack.frontend.ir.derive import call_cost

    costly = {n: 10.0 + 2.0 * n for n in (1, *BATCH_SIZES)}  # a fixed cost per call, too
    choice = choose_batching(rate_rps=100, p99_ms=400, call_ms=costly, http_ms=5,
                             rows_per_request=10)
    assert choice.max_batch_size == 32
    reasons = {s: v for s, v, _ in choice.reasons}
    # 3 requests of 10 rows share a batch of 32 rows
    assert reasons["serving.batching.capacity_rps"] == round(
        1000 * 3 / (3 * 5 + call_cost(costly, 30)))
