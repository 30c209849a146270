"""The router's limits are derived from what the service can hold (its workers, its batch
size, its timeout), with reasons `plan --explain` shows; the throughput objective does not
size them (sized by it, churn's router refused 97.8% of requests at 64 concurrent clients)."""

from __future__ import annotations

import shutil

import yaml

from mlstack.frontend.analysis import analyze_spec
from mlstack.ops.local.deploy import router_limits
from tests.conftest import BLUEPRINTS


def _churn(tmp_path, change=None):
    spec = tmp_path / "mlstack.yaml"
    shutil.copy(BLUEPRINTS / "churn" / "mlstack.yaml", spec)
    if change is not None:
        data = yaml.safe_load(spec.read_text())
        change(data)
        spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return analyze_spec(spec).system


def test_churn_admits_64_concurrent_clients_without_a_queue(tmp_path):
    churn = _churn(tmp_path)
    limits = router_limits(churn)
    # 2 workers (serving.cpu 2) x a batch of 16 scored and 16 forming
    assert churn.serving.batching.max_batch_size == 16
    assert limits["max_in_flight"] == 64 and limits["max_queue"] == 256
    assert limits["queue_timeout_s"] == 1.0  # serving.timeout_ms, not the p99 objective
    assert limits["backend_timeout_s"] >= 5.0


def test_the_throughput_objective_does_not_size_the_router(tmp_path):
    slow = _churn(tmp_path, lambda d: d["slos"].update(throughput_rps=5))
    fast = _churn(tmp_path, lambda d: d["slos"].update(throughput_rps=5000))
    assert router_limits(slow) == router_limits(fast)


def test_more_serving_cores_hold_more(tmp_path):
    four = _churn(tmp_path, lambda d: d["target"]["serving"].update(cpu=4))
    unbatched = _churn(tmp_path, lambda d: d["serving"].update(batching="off"))
    assert router_limits(four)["max_in_flight"] == 128
    assert router_limits(unbatched)["max_in_flight"] == 16  # 2 workers x 8, no batches


def test_the_limits_are_derivations_with_reasons(tmp_path):
    churn = _churn(tmp_path)
    found = {d.setting: d for d in churn.derivations if d.setting.startswith("serving.router.")}
    assert set(found) == {"serving.router.max_in_flight", "serving.router.max_queue",
                          "serving.router.queue_timeout_s", "serving.router.backend_timeout_s"}
    assert found["serving.router.max_in_flight"].value == "64"
    assert "2 worker(s)" in found["serving.router.max_in_flight"].reason
    assert "not the throughput objective" in found["serving.router.max_in_flight"].reason


def test_an_ir_from_before_the_limits_were_derived_gets_them_derived(tmp_path):
    churn = _churn(tmp_path)
    old = churn.model_copy(update={"serving": churn.serving.model_copy(update={"router": None})})
    assert router_limits(old) == router_limits(churn)
