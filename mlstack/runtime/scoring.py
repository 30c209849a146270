"""How a model scores: natively (scikit-learn) or compiled to ONNX and run by ONNX Runtime.

At registration, `compile_model` exports the fitted model to ONNX (float32 input, as the
trees read their input: skl2onnx for scikit-learn, onnxmltools for XGBoost and LightGBM, the
tabular MLP's own exporter for PyTorch) and checks it against the native model on the whole
evaluation set: the served output (the positive-class probability, the class, or the score)
of every row must agree within PARITY_TOLERANCE, |onnx - native| <= 1e-5 x max(1, |native|);
classes must be equal. The outcome is recorded in the model's metadata ('serving_runtime'),
and the ONNX bytes are stored with the model (custom object ONNX_OBJECT). The service
(`load_served_model`) runs ONNX when that record says it matched, else the native model, and
says why. `runtime` (the spec's serving.runtime): 'auto' (ONNX when it matches, else native),
'onnx' (registration fails when it does not: ModelExportError) or 'native' (never exported).

    compiled = compile_model(model, X_eval, task="binary_classification", runtime="auto")
    compiled.record   -> {"runtime": "onnx", "requested": "auto", "reason": ..., ...}
    served = load_served_model(bento_model, task=..., runtime="auto", threads=2)
    served.score(X)   -> one served value per row of a float64 matrix
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from mlstack.runtime.errors import ModelExportError

__all__ = ["ONNX_OBJECT", "PARITY_TOLERANCE", "RUNTIMES", "CompiledModel", "ServedModel",
           "compile_model", "load_served_model", "model_library", "native_scorer",
           "onnx_scorer"]

RUNTIMES = ("auto", "onnx", "native")
ONNX_OBJECT = "model.onnx"  # the ONNX bytes, a custom object of the BentoML model
PARITY_TOLERANCE = 1e-5
METADATA_KEY = "serving_runtime"
_REASON_LENGTH = 240


def _short(exc: BaseException) -> str:
    """An exception as one short line (skl2onnx errors can dump a whole graph)."""
    text = (str(exc).strip().splitlines() or [""])[0].split(" and attributes=")[0]
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= _REASON_LENGTH else text[: _REASON_LENGTH - 3] + "..."


def native_scorer(model: Any, task: str) -> Callable[[np.ndarray], np.ndarray]:
    """The served output of a model with the scikit-learn API (scikit-learn, XGBoost,
    LightGBM, the tabular MLP) on a float64 matrix: the positive-class
    probability (binary classification), else `predict` (class or score)."""
    # fitted on a DataFrame, scored on the same columns as an array: the same numbers
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    if task == "binary_classification":
        return lambda X: model.predict_proba(X)[:, 1]
    return cast(Callable[[np.ndarray], np.ndarray], model.predict)  # scikit-learn is untyped


def _import_onnxruntime() -> Any:
    """onnxruntime, its usage telemetry off unless the environment says otherwise (it would
    report from Linux too and write a device id under ~/.cache/Microsoft)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def onnx_scorer(onnx_bytes: bytes, task: str, threads: int = 1
                ) -> Callable[[np.ndarray], np.ndarray]:
    """The same output from the model's ONNX graph on ONNX Runtime: `threads` intra-op
    threads (the serving CPU budget), no spinning (a waiting thread must not burn a core
    the feature store and the HTTP server share)."""
    ort = _import_onnxruntime()

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    pick = _output_for(session.get_outputs(), task)
    wanted = [pick.name]
    if task == "binary_classification":

        def score(X: np.ndarray) -> np.ndarray:
            # ONNX Runtime is untyped: run gives a list of numpy arrays
            out: np.ndarray = session.run(wanted, {name: X.astype(np.float32)})[0]
            # the probability tensor (n, 2), or a positive-class column (n,) or (n, 1)
            return out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)
    elif task == "multiclass_classification":

        def score(X: np.ndarray) -> np.ndarray:
            return cast(np.ndarray, session.run(wanted, {name: X.astype(np.float32)})[0])
    else:

        def score(X: np.ndarray) -> np.ndarray:
            out: np.ndarray = session.run(wanted, {name: X.astype(np.float32)})[0]
            return out.reshape(-1)
    return score


def _output_for(outputs: Sequence[Any], task: str) -> Any:
    """The graph output that holds the served value: a classifier's probabilities (binary)
    or label (multiclass); skl2onnx and onnxmltools give (label, probabilities); any other
    model its first output."""
    if task == "binary_classification":
        probabilities = [o for o in outputs if "float" in o.type]
        return probabilities[-1] if probabilities else outputs[0]
    if task == "multiclass_classification":
        labels = [o for o in outputs if "int" in o.type or "string" in o.type]
        return labels[0] if labels else outputs[0]
    return outputs[0]


def model_library(model: Any) -> str:
    """The library a fitted model comes from: 'xgboost', 'lightgbm', 'pytorch' (mlstack's
    tabular MLP) or 'sklearn' (anything else with the scikit-learn API)."""
    module = type(model).__module__
    top = module.split(".")[0]
    if top in ("xgboost", "lightgbm"):
        return top
    if module == "mlstack.runtime.tabular_mlp":
        return "pytorch"
    return "sklearn"


def export_onnx(model: Any, n_features: int, task: str) -> bytes:
    """The fitted model as ONNX bytes (float32 input of n_features columns; classifiers
    give a probability tensor, not a list of maps): skl2onnx for scikit-learn, onnxmltools'
    converters for XGBoost and LightGBM, the tabular MLP's own `to_onnx` for PyTorch."""
    _import_onnxruntime()  # skl2onnx imports it
    library = model_library(model)
    if library == "pytorch":
        from mlstack.runtime import tabular_mlp

        return tabular_mlp.to_onnx(model, n_features)
    if library in ("xgboost", "lightgbm"):
        return _export_boosted(model, n_features, library)
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(model): {"zipmap": False}} if task.endswith("classification") else None
    graph = to_onnx(model, initial_types=[("X", FloatTensorType([None, n_features]))],
                    options=options)
    return cast(bytes, graph.SerializeToString())  # skl2onnx is untyped: an onnx ModelProto


def _export_boosted(model: Any, n_features: int, library: str) -> bytes:
    """XGBoost and LightGBM models by onnxmltools (the `xgboost`/`lightgbm` extras install
    it). XGBRanker has no converter of its own: its booster scores as a regressor's does, so
    it is converted as one (the parity check still compares with the ranker)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [("X", FloatTensorType([None, n_features]))]
    if library == "lightgbm":
        # onnxmltools is untyped: its converters give an onnx ModelProto
        return cast(bytes, onnxmltools.convert_lightgbm(model, initial_types=types,
                                                        zipmap=False).SerializeToString())
    import xgboost

    if isinstance(model, xgboost.XGBRanker):
        as_regressor = xgboost.XGBRegressor(**model.get_params())
        as_regressor._Booster = model.get_booster()
        model = as_regressor
    # the converter reads features by their default names (f0, f1, ...): a model fitted on a
    # DataFrame (the training flow's) has the columns' names, set aside for the conversion
    booster = model.get_booster()
    names = booster.feature_names
    booster.feature_names = None
    try:
        return cast(bytes, onnxmltools.convert_xgboost(model, initial_types=types)
                    .SerializeToString())
    finally:
        booster.feature_names = names


def parity(native: np.ndarray, compiled: np.ndarray, task: str) -> dict[str, Any]:
    """How far the compiled output is from the native one: the largest |difference| and
    the largest |difference| / max(1, |native|) (numbers), or the rows whose class differs."""
    if task == "multiclass_classification":
        mismatches = int(np.sum(np.asarray(native) != np.asarray(compiled)))
        return {"mismatches": mismatches, "ok": mismatches == 0}
    a, b = np.asarray(native, dtype=np.float64), np.asarray(compiled, dtype=np.float64)
    diff = np.abs(a - b)
    scaled = diff / np.maximum(1.0, np.abs(a))
    worst = float(np.max(scaled)) if len(diff) else 0.0
    return {"max_abs_diff": float(np.max(diff)) if len(diff) else 0.0,
            "max_scaled_diff": worst, "ok": bool(np.all(np.isfinite(b)))
            and worst <= PARITY_TOLERANCE}


@dataclass(frozen=True)
class CompiledModel:
    """What registration stores: the runtime record (metadata) and the ONNX bytes, if any."""

    record: dict[str, Any]
    onnx: bytes | None = None


def compile_model(model: Any, evaluation: Any, *, task: str, runtime: str = "auto") -> CompiledModel:
    """Export `model` to ONNX and check it on `evaluation` (the evaluation set's model input:
    a DataFrame or matrix). 'native' never exports; 'onnx' raises ModelExportError when the
    export or the check fails; 'auto' then records why the native model serves."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown serving runtime {runtime!r}; expected one of {RUNTIMES}")
    record: dict[str, Any] = {"requested": runtime, "tolerance": PARITY_TOLERANCE}
    if runtime == "native":
        return CompiledModel({**record, "runtime": "native",
                              "reason": "serving.runtime is native: not exported to ONNX"})
    X = np.asarray(evaluation, dtype=np.float64)
    began = time.perf_counter()
    onnx_bytes = None
    try:
        if X.ndim != 2 or len(X) == 0:
            raise ValueError("no evaluation rows to check the export on")
        onnx_bytes = export_onnx(model, X.shape[1], task)
        check = parity(native_scorer(model, task)(X), onnx_scorer(onnx_bytes, task)(X), task)
    except Exception as exc:  # any failure of the export path: serve natively, say why
        check = {"ok": False, "error": _short(exc)}
    record.update(rows=int(len(X)) if X.ndim == 2 else 0,
                  export_seconds=round(time.perf_counter() - began, 3),
                  **{k: v for k, v in check.items() if k not in ("ok", "error")})
    name = type(model).__name__
    if check["ok"]:
        reason = (f"ONNX export of {name} matches the native model on {record['rows']} "
                  "evaluation rows (" + _parity_text(check, task) + ")")
        return CompiledModel({**record, "runtime": "onnx", "reason": reason}, onnx_bytes)
    if "error" in check:
        reason = f"ONNX export of {name} failed: {check['error']}"
    else:
        reason = (f"ONNX export of {name} differs from the native model on the evaluation "
                  "set (" + _parity_text(check, task) + ")")
    if runtime == "onnx":
        raise ModelExportError(f"serving.runtime is onnx, but {reason}")
    return CompiledModel({**record, "runtime": "native", "reason": reason})


def _parity_text(check: Mapping[str, Any], task: str) -> str:
    if task == "multiclass_classification":
        return f"{check['mismatches']} rows with another class"
    return (f"max |diff| {check['max_abs_diff']:.2g}, tolerance {PARITY_TOLERANCE:g} "
            "x max(1, |value|)")


@dataclass
class ServedModel:
    """The model a service runs: `score` (float64 matrix -> served values), which runtime
    and why, and the registration's record."""

    score: Callable[[np.ndarray], np.ndarray]
    runtime: str
    reason: str
    record: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "reason": self.reason,
                "requested": self.record.get("requested"),
                "parity": {k: self.record[k] for k in ("rows", "max_abs_diff",
                                                        "max_scaled_diff", "mismatches",
                                                        "tolerance") if k in self.record}}


def load_served_model(stored: Any, *, task: str, runtime: str = "auto",
                      threads: int = 1) -> ServedModel:
    """The model a service runs, from its BentoML model (`stored`): ONNX Runtime when the
    registration recorded a matching export (and `runtime` allows it), else scikit-learn.
    `runtime` 'onnx' refuses (RuntimeError) a model without a matching export."""
    import bentoml

    record = dict(stored.info.metadata.get(METADATA_KEY) or {})
    if runtime != "native" and record.get("runtime") == "onnx":
        try:
            onnx_bytes = stored.custom_objects[ONNX_OBJECT]
            return ServedModel(onnx_scorer(onnx_bytes, task, threads), "onnx",
                               record.get("reason", ""), record)
        except Exception as exc:
            if runtime == "onnx":
                raise RuntimeError(f"model {stored.tag}: ONNX Runtime could not load its "
                                   f"export: {_short(exc)}") from exc
            reason = f"ONNX Runtime could not load the export: {_short(exc)}"
    elif runtime == "native":
        reason = "serving.runtime is native"
    else:
        reason = record.get("reason") or "the model was registered without an ONNX export"
    if runtime == "onnx":
        raise RuntimeError(f"serving.runtime is onnx, but model {stored.tag} has no matching "
                           f"ONNX export: {reason}")
    model = bentoml.sklearn.load_model(stored)
    return ServedModel(native_scorer(model, task), "native", reason, record)
