"""A request-time field end to end: the churn blueprint with a retention offer's discount
sent with each request (features.request_sources, a Feast RequestSource), read by a
transform and as a model feature, logged in the label source for training. Deployed locally:
training reads the logged values, the skew check sends each sampled row's logged value (so
online = offline), and the service takes it in its typed request over real HTTP."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from mlstack.ops.local import procs
from tests.conftest import redate_project
from tests.engine.deploy_support import deploy_env, loosen, run_mlstack, stop_everything
from tests.engine.test_deploy_local import LOOSE_SLOS

pytestmark = [pytest.mark.engine, pytest.mark.slow]

REQUEST_FIELD = {
    "    columns: {customer_id: int64, event_timestamp: timestamp, churned: int64}":
        "    columns: {customer_id: int64, event_timestamp: timestamp, churned: int64,\n"
        "              discount: float64}",
    "  transforms:\n": "  request_sources:\n"
                       "    - name: offer\n"
                       "      description: The retention offer shown with the request.\n"
                       "      fields: {discount: float64}\n"
                       "  transforms:\n"
                       "    - name: discounted_charges\n"
                       "      expr: monthly_charges * (1 - offer.discount)\n",
    "    - charges_per_tenure\n": "    - charges_per_tenure\n"
                                 "    - offer.discount\n"
                                 "    - discounted_charges\n",
}


def test_a_request_field_is_trained_on_checked_and_served(tmp_path):
    env = deploy_env(tmp_path)
    project = tmp_path / "churn"
    port = procs.free_port()

    def mlstack(*args):
        return run_mlstack(tmp_path, *args, env=env)

    mlstack("init", str(project), "--blueprint", "churn")
    redate_project(project)
    labels_path = project / "data" / "churn_labels.parquet"
    labels = pd.read_parquet(labels_path)
    labels["discount"] = np.random.default_rng(5).choice([0.0, 0.1, 0.2, 0.3], len(labels))
    labels.to_parquet(labels_path, index=False)
    spec = project / "mlstack.yaml"
    loosen(spec, {**LOOSE_SLOS, **REQUEST_FIELD})
    lint = mlstack("lint", str(spec)).stdout  # the loosened freshness SLO warns (MLS403)
    assert "0 error(s)" in lint and "MLS214" not in lint  # discount is read
    try:
        result = json.loads(mlstack("deploy", str(spec), "--json", "--port", str(port),
                                    "--duration", "3").stdout)
        stages = {s["name"]: s["status"] for s in result["stages"]}
        assert stages["train"] == "done" and stages["verify"] == "done", stages
        assert result["skew"]["mismatches"] == [] and result["skew"]["compared"] > 0
        example = result["example_request"]["rows"][0]
        assert set(example) == {"customer_id", "discount"}  # the logged value travels
        base = f"http://127.0.0.1:{port}"
        customer = example["customer_id"]
        rows = [{"customer_id": customer, "discount": d} for d in (0.0, 0.3)]
        features = httpx.post(f"{base}/features", json={"rows": rows}, timeout=30)
        assert features.status_code == 200, features.text
        got = features.json()
        assert [r["discount"] for r in got] == [0.0, 0.3]
        charges = got[0]["customer_profile__monthly_charges"]
        assert got[1]["discounted_charges"] == pytest.approx(charges * 0.7, rel=1e-12)
        answer = httpx.post(f"{base}/predict", json={"rows": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert all(isinstance(v, float) for v in answer.json())
        # the request field is part of the typed request: required, a finite number
        for bad in ([{"customer_id": customer}],
                    [{"customer_id": customer, "discount": "0.1"}],
                    [{"customer_id": customer, "discount": 0.1, "coupon": 1}]):
            assert httpx.post(f"{base}/predict", json={"rows": bad},
                              timeout=30).status_code == 400, bad
        schema = httpx.get(f"{base}/docs.json", timeout=30).json()["components"]["schemas"]
        assert schema["Row"]["required"] == ["customer_id", "discount"]
        assert schema["Row"]["properties"]["discount"]["type"] == "number"
    finally:
        stop_everything(project, env)
