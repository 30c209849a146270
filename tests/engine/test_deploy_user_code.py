"""User code, deployed for real: a copy of the churn blueprint whose model comes from a factory
in the project's models.py and two of whose transforms are functions in features.py (one
reading the other), deployed locally with the real libraries.

It checks that the served predictions equal offline ones computed with the user's own
functions (the skew check passes), that each version folder carries its copy of the user's
files, that a change of features.py alone shows in `mlstack plan` as a retrain, and that
rollback puts the earlier copy back in service.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from mlstack.ops.local import procs
from tests.engine.deploy_support import (
    change_spec,
    deploy_env,
    deploy_state,
    run_mlstack,
    stop_everything,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

MODELS_PY = '''\
"""The churn model: a soft vote of boosted trees and a scaled logistic regression."""

from sklearn.ensemble import GradientBoostingClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def build_model(n_estimators=100, c=1.0, random_state=None):
    trees = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=3,
                                       random_state=random_state)
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))
    return VotingClassifier([("trees", trees), ("linear", linear)], voting="soft")
'''
FEATURES_PY = '''\
import numpy as np

PER_YEAR = 12.0


def calls_per_year(support_calls, tenure_months):
    return support_calls / np.maximum(tenure_months, 1) * PER_YEAR


def log_calls(calls):
    return np.log1p(calls)
'''
USER_SPEC = {
    "      expr: monthly_charges / (tenure_months + 1)\n": (
        "      expr: monthly_charges / (tenure_months + 1)\n"
        "    - name: calls_per_year\n"
        "      python: features.py:calls_per_year\n"
        "      inputs: [customer_profile.support_calls, customer_profile.tenure_months]\n"
        "    - name: log_calls\n"
        "      python: features.py:log_calls\n"
        "      inputs: [calls_per_year]\n"),
    "  algorithm: gradient_boosting\n"
    "  params: {n_estimators: 150, max_depth: 3, learning_rate: 0.1}\n": (
        "  estimator: models.py:build_model\n"
        "  params: {n_estimators: 60, c: 0.5}\n"),
    "    - charges_per_tenure\n": "    - charges_per_tenure\n    - log_calls\n",
}

OFFLINE_PREDICT = r"""
import json, sys
import bentoml, numpy as np, pandas as pd
tag, project, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, project)
import features  # the user's own file, as the project holds it now
model = bentoml.sklearn.load_model(tag)
c = pd.read_parquet(f"{project}/data/customers.parquet")
latest = c.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
rows = latest.loc[ids]
calls = features.calls_per_year(rows.support_calls.to_numpy(np.int64),
                                rows.tenure_months.to_numpy(np.int64))
X = pd.DataFrame({
    "customer_profile__tenure_months": rows.tenure_months.to_numpy(),
    "customer_profile__monthly_charges": rows.monthly_charges.to_numpy(),
    "customer_profile__support_calls": rows.support_calls.to_numpy(),
    "customer_profile__is_monthly_contract": rows.is_monthly_contract.to_numpy(),
    "charges_per_tenure": (rows.monthly_charges / (rows.tenure_months + 1)).to_numpy(),
    "log_calls": features.log_calls(calls),
})
print(json.dumps(model.predict_proba(X)[:, 1].tolist()))
"""
IDS = [1001, 1500, 2999, 1234]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy_user_code")
    folder = root / "churn"
    env = deploy_env(root)
    run_mlstack(root, "init", str(folder), "--blueprint", "churn", env=env)
    change_spec(folder / "mlstack.yaml", USER_SPEC)
    (folder / "models.py").write_text(MODELS_PY)
    (folder / "features.py").write_text(FEATURES_PY)
    info = {"folder": folder, "env": env, "port": procs.free_port(), "home": root / "home"}
    yield info
    stop_everything(folder, env)


def _offline(project, tag: str) -> list[float]:
    bentoml_home = next((project["home"] / ".local/state/mlstack/projects").iterdir()) / (
        "bentoml")
    out = subprocess.run([sys.executable, "-c", OFFLINE_PREDICT, tag, str(project["folder"]),
                          json.dumps(IDS)], env=dict(project["env"], BENTOML_HOME=str(
                              bentoml_home)), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _served(port: int) -> list[float]:
    response = httpx.post(f"http://127.0.0.1:{port}/predict",
                          json={"rows": [{"customer_id": i} for i in IDS]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _deploy(project) -> dict:
    # the canary's judgement is not this test's (test_deploy_local's is): short steps
    proc = run_mlstack(project["folder"], "deploy", "--json", "--port", str(project["port"]),
                       "--duration", "2", "--max-step-seconds", "4", env=project["env"])
    return json.loads(proc.stdout)


def test_user_code_is_linted_trained_served_and_carried_by_the_version(project):
    folder, env, port = project["folder"], project["env"], project["port"]
    run_mlstack(folder, "lint", env=env)
    result = _deploy(project)
    stages = {s["name"]: s["status"] for s in result["stages"]}
    for name in ("train", "evaluate", "register", "start_service", "skew_check", "verify",
                 "promote"):
        assert stages[name] == "done", (name, result["stages"])
    assert result["skew"]["mismatches"] == [] and result["skew"]["compared"] > 0
    served = _served(port)
    assert served == pytest.approx(_offline(project, result["model_tag"]), abs=1e-5)
    version = folder / ".mlstack" / "versions" / "v1" / "churn_system" / "user_code"
    assert (version / "models.py").read_text() == MODELS_PY
    assert (version / "features.py").read_text() == FEATURES_PY
    project.update(v1_tag=result["model_tag"], v1_served=served)


def test_a_changed_user_file_retrains_and_rollback_restores_the_old_copy(project):
    folder, env, port = project["folder"], project["env"], project["port"]
    assert "v1_tag" in project, "the first deploy failed"
    changed = FEATURES_PY.replace("PER_YEAR = 12.0", "PER_YEAR = 4.0")
    (folder / "features.py").write_text(changed)
    plan = json.loads(run_mlstack(folder, "plan", "--json", env=env).stdout)
    user_code = [r for r in plan["resources"] if r["kind"] == "user_code"]
    assert [(r["name"], r["consequence"]) for r in user_code] == [("features.py", "retrain")]
    assert plan["deploy"]["train"] is True and plan["deploy"]["new_version"] is True
    result = _deploy(project)
    assert result["version"] == "v2" and result["model_tag"] != project["v1_tag"]
    assert result["skew"]["mismatches"] == []
    assert _served(port) == pytest.approx(_offline(project, result["model_tag"]), abs=1e-5)
    versions = folder / ".mlstack" / "versions"
    assert (versions / "v2/churn_system/user_code/features.py").read_text() == changed
    assert (versions / "v1/churn_system/user_code/features.py").read_text() == FEATURES_PY
    run_mlstack(folder, "rollback", env=env)
    assert deploy_state(folder)["current"] == "v1"
    assert _served(port) == pytest.approx(project["v1_served"], abs=1e-9)
