"""The PyTorch MLP estimators: learning, determinism, pickling, the sklearn API, devices, ONNX."""

from __future__ import annotations

import ast
import inspect
import io
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the MLP's extra)")

from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402

from mlstack.runtime import tabular_mlp  # noqa: E402
from mlstack.runtime.tabular_mlp import MLPClassifier, MLPRegressor, to_onnx  # noqa: E402

# fitted on frames, scored on arrays (as runtime.scoring does): scikit-learn's warning about it
# is checked once, in test_learns_a_separable_binary_problem
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")

FAST = {"hidden_layers": (16, 8), "epochs": 15, "batch_size": 64}
DEFAULTS = {"hidden_layers": (64, 32), "epochs": 20, "batch_size": 256, "learning_rate": 1e-3,
            "weight_decay": 0.0, "dropout": 0.0, "random_state": 0, "device": "cpu"}


def _features(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """Seven columns on very different scales (the model standardises them), one constant."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 7)) * [1, 10, 100, 0.1, 1, 5, 0] + [0, 5, -50, 1, 0, 0, 3]
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(7)])


def _z(X: pd.DataFrame) -> np.ndarray:
    values = X.to_numpy()
    return (values - values.mean(0)) / np.where(values.std(0) > 0, values.std(0), 1)


@pytest.fixture(scope="module")
def data():
    X = _features()
    z = _z(X)
    binary = np.where(z[:, 0] + z[:, 1] - z[:, 2] > 0, "yes", "no")
    multiclass = np.digitize(z[:, 0] + z[:, 3], [-0.6, 0.6]) * 10 + 1  # 1, 11, 21
    regression = 3.0 * z[:, 0] - 2.0 * z[:, 1] + 0.5 * z[:, 2] + 4.0
    return X, binary, multiclass, regression


@pytest.fixture(scope="module")
def fitted(data):
    X, binary, multiclass, regression = data
    return {"binary": MLPClassifier(**FAST, learning_rate=1e-2).fit(X, binary),
            "multiclass": MLPClassifier(**FAST, learning_rate=1e-2).fit(X, multiclass),
            "regression": MLPRegressor(**FAST, learning_rate=1e-2).fit(X, regression)}


def test_learns_a_separable_binary_problem(data, fitted):
    X, binary, _, _ = data
    model = fitted["binary"]
    assert list(model.classes_) == ["no", "yes"] and model.n_features_in_ == 7
    assert list(model.feature_names_in_) == list(X.columns)
    assert np.mean(model.predict(X) == binary) > 0.9
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        proba = model.predict_proba(X.to_numpy())  # an array scores as the frame did
    assert proba.shape == (len(X), 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X))
    assert len(model.loss_curve_) == FAST["epochs"] and model.loss_curve_[-1] < model.loss_curve_[0]


def test_multiclass_columns_follow_classes(data, fitted):
    X, _, multiclass, _ = data
    model = fitted["multiclass"]
    assert list(model.classes_) == [1, 11, 21]
    assert np.mean(model.predict(X) == multiclass) > 0.85
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    # each class's column is highest, on average, on its own rows
    for column, label in enumerate(model.classes_):
        assert proba[multiclass == label].mean(axis=0).argmax() == column


def test_regression_fits_a_linear_target_in_its_units(data, fitted):
    X, _, _, regression = data
    model = fitted["regression"]
    predictions = model.predict(X)
    assert predictions.shape == (len(X),) and predictions.dtype == np.float64
    assert r2_score(regression, predictions) > 0.8
    assert model.score(X, regression) > 0.8
    assert abs(predictions.mean() - regression.mean()) < 0.5


def test_same_seed_same_model_and_caller_state_untouched(data):
    X, binary, _, _ = data
    params = {**FAST, "epochs": 3, "dropout": 0.2}
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    first = MLPClassifier(**params, random_state=7).fit(X, binary)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    second = MLPClassifier(**params, random_state=7).fit(X, binary)
    second.predict(X)
    assert torch.get_num_threads() == threads_before
    other = MLPClassifier(**params, random_state=8).fit(X, binary)
    assert np.array_equal(first.predict_proba(X), second.predict_proba(X))
    for (w1, b1), (w2, b2) in zip(first.layers_, second.layers_, strict=True):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
    assert not np.array_equal(first.predict_proba(X), other.predict_proba(X))
    again = MLPRegressor(**params).fit(X, X["f0"])
    assert np.array_equal(again.predict(X), MLPRegressor(**params).fit(X, X["f0"]).predict(X))


def test_threads_follow_the_work_and_are_restored(data, fitted):
    before = torch.get_num_threads()
    with tabular_mlp._threads(torch, work=1000):
        assert torch.get_num_threads() == 1
    with tabular_mlp._threads(torch, work=1 << 40):
        assert torch.get_num_threads() == min(before, tabular_mlp._cpu_count())
    assert torch.get_num_threads() == before
    # predictions from several threads at once: the same answers, the count restored
    X, model = data[0], fitted["multiclass"]
    expected = model.predict_proba(X)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: model.predict_proba(X), range(16)))
    assert all(np.array_equal(r, expected) for r in results)
    assert torch.get_num_threads() == before and tabular_mlp._thread_users == 0


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_pickle_round_trip_holds_no_torch_objects(data, fitted, task):
    import cloudpickle
    import joblib

    X = data[0]
    model = fitted[task]
    expected = model.predict(X)  # builds the cached torch module, which is not pickled
    def joblib_round_trip(model):  # how bentoml.sklearn saves a model
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return buffer.getvalue()

    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads),
                         (joblib_round_trip, lambda blob: joblib.load(io.BytesIO(blob)))):
        blob = dumps(model)
        assert b"torch" not in blob
        loaded = loads(blob)
        assert "_module" not in loaded.__dict__
        assert np.array_equal(loaded.predict(X), expected)
        if task != "regression":
            assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_sklearn_parameters_and_clone():
    for cls in (MLPClassifier, MLPRegressor):
        signature = inspect.signature(cls.__init__)
        assert {name: p.default for name, p in signature.parameters.items()
                if name != "self"} == DEFAULTS
        assert cls().get_params() == DEFAULTS
        model = cls(hidden_layers=(8,), epochs=2, dropout=0.1, device="cuda:1")
        copy = clone(model)
        assert copy is not model and copy.get_params() == model.get_params()
        assert copy.set_params(epochs=5).epochs == 5
    assert is_classifier(MLPClassifier()) and not is_regressor(MLPClassifier())
    assert is_regressor(MLPRegressor()) and not is_classifier(MLPRegressor())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_scikit_learn_estimator_checks(cls):
    """scikit-learn's own API checks (input validation, feature names, clone, pickling...)."""
    estimator_checks = pytest.importorskip("sklearn.utils.estimator_checks")
    if "expected_failed_checks" not in inspect.signature(
            estimator_checks.check_estimator).parameters:
        pytest.skip("scikit-learn < 1.6 has no expected_failed_checks")
    expected = {  # with the default 20 epochs, not API checks
        "check_regressors_train": "20 epochs of a 200-row set: R2 < 0.5",
        "check_methods_subset_invariance": "float32: a subset's GEMM may round otherwise"}
    results = estimator_checks.check_estimator(cls(), on_fail=None,
                                               expected_failed_checks=expected)
    failed = [f"{r['check_name']}: {r['exception']}" for r in results if r["status"] == "failed"]
    assert failed == []


def test_clone_of_a_fitted_model_is_unfitted(data, fitted):
    copy = clone(fitted["binary"])
    with pytest.raises(NotFittedError):
        copy.predict(data[0])


def test_cuda_without_a_visible_device_is_a_clear_error(data, monkeypatch):
    X, binary, _, _ = data
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match="no CUDA device is visible"):
            MLPClassifier(**FAST, device=device).fit(X, binary)
    with pytest.raises(ValueError, match="device must be"):
        MLPRegressor(**FAST, device="tpu").fit(X, X["f0"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_trained_on_cuda_predicts_on_cpu_after_pickling(data):
    X, binary, _, _ = data
    model = MLPClassifier(**FAST, device="cuda").fit(X, binary)
    assert np.mean(model.predict(X) == binary) > 0.9
    loaded = pickle.loads(pickle.dumps(model))
    assert all(isinstance(w, np.ndarray) for pair in loaded.layers_ for w in pair)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_bad_input_is_refused(data, fitted):
    X, binary, _, _ = data
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier(**FAST).fit(X.assign(f0=np.nan), binary)
    with pytest.raises(ValueError, match="one class"):
        MLPClassifier(**FAST).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MLPRegressor(**FAST).fit(X, np.zeros(3))
    with pytest.raises(ValueError, match="hidden_layers"):
        MLPRegressor(hidden_layers=(8, 0)).fit(X, X["f0"])
    with pytest.raises(ValueError, match="dropout"):
        MLPRegressor(dropout=1.0).fit(X, X["f0"])
    with pytest.raises(ValueError, match="learning_rate must be a number"):
        MLPRegressor(learning_rate="1e-3").fit(X, X["f0"])  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(ValueError, match="epochs"):
        MLPRegressor(epochs=0).fit(X, X["f0"])
    unfitted = MLPRegressor(batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        unfitted.fit(X, X["f0"])
    assert not hasattr(unfitted, "mean_")  # checked before any work
    with pytest.raises(ValueError, match="feature names should match"):
        fitted["binary"].predict(X.iloc[:, :6])
    with pytest.raises(ValueError, match="X has 6 features, but MLPClassifier is expecting 7"):
        fitted["binary"].predict(X.to_numpy()[:, :6])
    with pytest.raises(ValueError, match="Expected 2D array"):
        fitted["regression"].predict(X.to_numpy()[0])
    with pytest.raises(ValueError, match="requires y to be passed"):
        MLPRegressor(**FAST).fit(X, None)
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier(**FAST).fit(X, X["f0"])  # a continuous target


def test_hidden_layers_as_a_list_or_an_int_and_no_seed(data):
    X, binary, _, _ = data
    as_list = MLPClassifier(**{**FAST, "hidden_layers": [16, 8]}).fit(X, binary)
    assert [w.shape for w, _ in as_list.layers_] == [(16, 7), (8, 16), (2, 8)]
    one = MLPClassifier(**{**FAST, "hidden_layers": 4, "epochs": 1}).fit(X, binary)
    assert [w.shape for w, _ in one.layers_] == [(4, 7), (2, 4)]
    unseeded = MLPClassifier(**{**FAST, "epochs": 1, "random_state": None})
    assert not np.array_equal(unseeded.fit(X, binary).layers_[0][0],
                              unseeded.fit(X, binary).layers_[0][0])


def test_no_hidden_layers_is_a_linear_model(data):
    X, _, _, regression = data
    model = MLPRegressor(hidden_layers=(), epochs=30, batch_size=32, learning_rate=1e-2)
    assert model.fit(X, regression).score(X, regression) > 0.95
    assert len(model.layers_) == 1


def _onnx_session(blob: bytes):
    from mlstack.runtime.scoring import _import_onnxruntime

    ort = _import_onnxruntime()
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_onnx_matches_the_torch_model(data, fitted, task):
    model = fitted[task]
    blob = to_onnx(model, n_features=7)
    session = _onnx_session(blob)
    assert [i.name for i in session.get_inputs()] == ["X"]
    assert session.get_inputs()[0].shape[1] == 7
    rng = np.random.default_rng(5)
    # random rows around and well beyond the training data, and a one-row batch
    X = data[0].to_numpy()
    random = X.mean(0) + rng.normal(size=(1000, 7)) * X.std(0) * 3 + rng.normal(size=(1000, 7))
    for rows in (random, random[:1]):
        got = session.run(None, {"X": rows.astype(np.float32)})
        if task == "regression":
            assert [o.name for o in session.get_outputs()] == ["variable"]
            assert got[0].shape == (len(rows), 1)
            native = model.predict(rows)
            assert np.max(np.abs(got[0][:, 0] - native) / np.maximum(1, np.abs(native))) <= 1e-5
        else:
            assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
            label, proba = got
            assert proba.shape == (len(rows), len(model.classes_))
            assert np.max(np.abs(proba - model.predict_proba(rows))) <= 1e-5
            assert np.array_equal(label, model.predict(rows))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_scoring_serves_the_export_as_it_serves_skl2onnx_graphs(data, fitted, task):
    """runtime.scoring's native and ONNX scorers and parity check take the MLP and its
    export as they are: the served output agrees on the training rows."""
    from mlstack.runtime.scoring import native_scorer, onnx_scorer, parity

    name = {"binary": "binary_classification", "multiclass": "multiclass_classification",
            "regression": "regression"}[task]
    X = data[0].to_numpy()
    model = fitted[task]
    native = native_scorer(model, name)(X)
    served = onnx_scorer(to_onnx(model, X.shape[1]), name, threads=1)(X)
    assert served.shape == native.shape == (len(X),)
    assert parity(native, served, name)["ok"]


def test_onnx_checks_the_feature_count_and_fit(fitted):
    with pytest.raises(ValueError, match="fitted with 7"):
        to_onnx(fitted["binary"], n_features=6)
    with pytest.raises(NotFittedError):
        to_onnx(MLPRegressor(), n_features=7)


def test_onnx_label_types():
    X = _features(120, seed=3)
    for labels in (np.array([True, False] * 60), np.array([1.0, 3.0, 2.0] * 40)):
        model = MLPClassifier(hidden_layers=(4,), epochs=1).fit(X, labels)
        label, _ = _onnx_session(to_onnx(model, 7)).run(None, {"X": X.to_numpy(np.float32)})
        assert label.dtype == model.classes_.dtype
        assert np.array_equal(label, model.predict(X))


def test_torch_and_onnx_are_imported_by_the_functions_only():
    """Loading a pickled model, or the module, costs no torch import (a static check: a
    subprocess importing scikit-learn would cost seconds)."""
    imported, nodes = set(), list(ast.parse(Path(tabular_mlp.__file__).read_text()).body)
    while nodes:  # what runs at import: everything but function bodies
        node = nodes.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
        nodes.extend(ast.iter_child_nodes(node))
    assert "sklearn" in imported and not imported & {"torch", "onnx", "onnxruntime"}
    assert tabular_mlp.__all__ == ["ONNX_OPSET", "MLPClassifier", "MLPRegressor", "to_onnx"]
