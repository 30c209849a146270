"""The compiled model path: ONNX export with a parity check at registration, the runtime a
service loads, and why it falls back to the native model."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from mlstack.runtime.errors import ModelExportError
from mlstack.runtime.scoring import (
    ONNX_OBJECT,
    PARITY_TOLERANCE,
    compile_model,
    load_served_model,
    native_scorer,
    onnx_scorer,
)

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.integers(0, 72, n), rng.uniform(18, 120, n),
                         rng.poisson(2, n), rng.integers(0, 2, n)]).astype(np.float64)
    y = (X[:, 1] / (X[:, 0] + 1) + rng.normal(0, 1, n) > 2).astype(int)
    return X, y


def test_gradient_boosting_exports_and_matches_within_the_tolerance():
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = _data()
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(X, y)
    compiled = compile_model(model, X, task="binary_classification", runtime="auto")
    record = compiled.record
    assert record["runtime"] == "onnx" and compiled.onnx
    assert record["rows"] == len(X) and record["max_abs_diff"] <= PARITY_TOLERANCE
    assert "matches the native model on 400 evaluation rows" in record["reason"]
    served = onnx_scorer(compiled.onnx, "binary_classification")(X)
    np.testing.assert_allclose(served, model.predict_proba(X)[:, 1], rtol=0,
                               atol=PARITY_TOLERANCE)


def test_regression_and_multiclass_outputs():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge

    X, y = _data()
    ridge = Ridge().fit(X, X[:, 1] * 3 + 7)
    compiled = compile_model(ridge, X, task="regression", runtime="onnx")
    assert compiled.record["runtime"] == "onnx"
    assert compiled.record["max_scaled_diff"] <= PARITY_TOLERANCE
    classes = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, X[:, 2] % 3)
    compiled = compile_model(classes, X, task="multiclass_classification", runtime="auto")
    assert compiled.record["runtime"] == "onnx" and compiled.record["mismatches"] == 0
    np.testing.assert_array_equal(
        onnx_scorer(compiled.onnx, "multiclass_classification")(X), classes.predict(X))


class _Unexportable:
    """A fitted model skl2onnx has no converter for."""

    def predict_proba(self, X):
        return np.column_stack([1 - X[:, 0] / 100, X[:, 0] / 100])

    def predict(self, X):
        return (X[:, 0] > 50).astype(int)


def test_failed_export_serves_natively_with_a_reason_unless_onnx_is_required():
    X, _ = _data()
    compiled = compile_model(_Unexportable(), X, task="binary_classification", runtime="auto")
    assert compiled.onnx is None and compiled.record["runtime"] == "native"
    assert compiled.record["reason"].startswith("ONNX export of _Unexportable failed: ")
    assert len(compiled.record["reason"]) < 400
    with pytest.raises(ModelExportError) as error:
        compile_model(_Unexportable(), X, task="binary_classification", runtime="onnx")
    assert str(error.value).startswith("serving.runtime is onnx, but ONNX export")
    native = compile_model(_Unexportable(), X, task="binary_classification", runtime="native")
    assert native.record == {"requested": "native", "tolerance": PARITY_TOLERANCE,
                             "runtime": "native",
                             "reason": "serving.runtime is native: not exported to ONNX"}
    empty = compile_model(_Unexportable(), X[:0], task="binary_classification")
    assert "no evaluation rows" in empty.record["reason"]


def test_parity_failure_is_not_served(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    import mlstack.runtime.scoring as scoring

    X, y = _data()
    model = LogisticRegression(max_iter=500).fit(X, y)
    real = scoring.onnx_scorer
    monkeypatch.setattr(scoring, "onnx_scorer",
                        lambda b, t, threads=1: (lambda X: real(b, t)(X) + 1e-3))
    compiled = compile_model(model, X, task="binary_classification", runtime="auto")
    assert compiled.record["runtime"] == "native" and compiled.onnx is None
    assert "differs from the native model" in compiled.record["reason"]
    assert compiled.record["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


def _stored(model, record, objects):
    return types.SimpleNamespace(tag="churn:abc", custom_objects=objects,
                                 info=types.SimpleNamespace(metadata={"serving_runtime": record}),
                                 model=model)


def test_load_served_model_picks_the_runtime(monkeypatch):
    import bentoml
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = _data()
    model = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, y)
    monkeypatch.setattr(bentoml.sklearn, "load_model", lambda stored: stored.model)
    compiled = compile_model(model, X, task="binary_classification")
    stored = _stored(model, compiled.record, {ONNX_OBJECT: compiled.onnx})
    served = load_served_model(stored, task="binary_classification", runtime="auto")
    assert served.runtime == "onnx" and served.info()["parity"]["rows"] == len(X)
    np.testing.assert_allclose(served.score(X), native_scorer(model, "binary_classification")(X),
                               atol=PARITY_TOLERANCE)
    native = load_served_model(stored, task="binary_classification", runtime="native")
    assert native.runtime == "native" and native.reason == "serving.runtime is native"
    broken = _stored(model, compiled.record, {ONNX_OBJECT: b"not onnx"})
    fallback = load_served_model(broken, task="binary_classification", runtime="auto")
    assert fallback.runtime == "native"
    assert fallback.reason.startswith("ONNX Runtime could not load the export")
    with pytest.raises(RuntimeError):
        load_served_model(broken, task="binary_classification", runtime="onnx")
    old = _stored(model, {}, {})
    assert load_served_model(old, task="binary_classification").reason == (
        "the model was registered without an ONNX export")
    with pytest.raises(RuntimeError, match="no matching ONNX export"):
        load_served_model(old, task="binary_classification", runtime="onnx")


def _boosted(library: str, kind: str):
    module = pytest.importorskip(library)
    pytest.importorskip("onnxmltools")
    prefix = "XGB" if library == "xgboost" else "LGBM"
    extra = {"verbose": -1} if library == "lightgbm" else {}
    return getattr(module, prefix + kind)(n_estimators=30, random_state=0, **extra)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
@pytest.mark.parametrize(("kind", "task"), [("Classifier", "binary_classification"),
                                            ("Classifier", "multiclass_classification"),
                                            ("Regressor", "regression"), ("Ranker", "ranking")])
def test_xgboost_and_lightgbm_export_by_onnxmltools_and_match(library, kind, task):
    X, y = _data()
    target = {"binary_classification": y, "multiclass_classification": X[:, 2].astype(int) % 3,
              "regression": X[:, 1] * 3 + 7, "ranking": X[:, 2].astype(int) % 4}[task]
    groups = {}
    if task == "ranking":  # 40 queries of 10 rows
        groups = ({"qid": np.repeat(np.arange(40), 10)} if library == "xgboost"
                  else {"group": [10] * 40})
    # fitted on named columns, as the training flow fits (scored on the matrix)
    named = pd.DataFrame(X, columns=["tenure", "spend", "calls", "monthly"])
    model = _boosted(library, kind).fit(named, target, **groups)
    compiled = compile_model(model, X, task=task, runtime="onnx")
    assert compiled.record["runtime"] == "onnx", compiled.record["reason"]
    assert compiled.record["reason"].startswith(f"ONNX export of {type(model).__name__} matches")
    if library == "xgboost":  # the names set aside for the conversion are back
        assert model.get_booster().feature_names == list(named.columns)
    served = onnx_scorer(compiled.onnx, task)(X)
    native = native_scorer(model, task)(X)
    if task == "multiclass_classification":
        np.testing.assert_array_equal(served, native)
    else:
        np.testing.assert_allclose(served, native, rtol=PARITY_TOLERANCE, atol=PARITY_TOLERANCE)


def test_an_unconvertible_boosted_model_serves_natively_with_the_reason(monkeypatch):
    import mlstack.runtime.scoring as scoring

    X, y = _data()
    model = _boosted("xgboost", "Classifier").fit(X, y)

    def no_converter(*args, **kwargs):
        raise RuntimeError("no converter for this booster")

    monkeypatch.setattr(scoring, "_export_boosted", no_converter)
    compiled = compile_model(model, X, task="binary_classification", runtime="auto")
    assert compiled.record["runtime"] == "native"
    assert compiled.record["reason"] == ("ONNX export of XGBClassifier failed: RuntimeError: "
                                         "no converter for this booster")
    with pytest.raises(ModelExportError, match="serving.runtime is onnx, but ONNX export of "
                       "XGBClassifier failed"):
        compile_model(model, X, task="binary_classification", runtime="onnx")
