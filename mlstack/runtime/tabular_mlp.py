"""A PyTorch multilayer perceptron for tabular data, with scikit-learn's estimator API.

    model = MLPClassifier(hidden_layers=(64, 32), epochs=20, random_state=0).fit(X, y)
    model.predict(X), model.predict_proba(X)          columns in model.classes_ order
    MLPRegressor(...).fit(X, y).predict(X)
    to_onnx(model, n_features=X.shape[1])             ONNX bytes, float32 input 'X'

The network is a ReLU MLP (dropout after each hidden layer while training) trained with Adam
on cross-entropy (classifier, binary and multiclass) or mean squared error (regressor, on the
standardised target). The inputs are standardised inside the model with the mean and
standard deviation learned in `fit`; a constant column is only centred.

A fitted model holds its network as numpy arrays (`layers_`: one (weight, bias) pair per
linear layer, `mean_`, `scale_`, and the regressor's `target_mean_`, `target_scale_`), so
pickle, cloudpickle and joblib (bentoml.sklearn's) save it and it loads and predicts on CPU
wherever it was trained; the torch module is rebuilt on the first prediction after loading. `device` ('cpu', 'cuda' or
'cuda:N') is where `fit` trains; predictions always run on CPU in float32, the same operations
in the same order as the ONNX graph, so the two agree to float32 rounding.

Training is deterministic for a `random_state` on CPU: the weights' initialisation and dropout
draw from torch's generator seeded inside a forked RNG state (the caller's is restored), and
the batches are shuffled by a generator of their own. torch gets one thread per 16M
multiply-adds of a step (one for the default network), at most the CPUs this process may use,
and its thread count is restored afterwards.

torch is imported by `fit` and the predictions, not with this module, and `to_onnx` needs
only onnx: it writes the graph itself (standardise, Gemm/Relu layers, then Softmax with an
ArgMax/Gather label, or the target's scale), which keeps it independent of torch's exporters
(torch 2.9+ defaults to one that needs onnxscript and takes seconds; the TorchScript one is
deprecated). Its outputs are laid out as skl2onnx's without zipmap (classifier: 'label',
'probabilities'; regressor: 'variable'), so runtime.scoring's ONNX scorer serves it as is.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6: the estimator's own method
    _validate_data = None

__all__ = ["ONNX_OPSET", "MLPClassifier", "MLPRegressor", "to_onnx"]

ONNX_OPSET = 17  # ONNX Runtime 1.13 and later run it (the runtime extra asks for 1.17)
_ONNX_IR_VERSION = 8  # the IR version of opset 17: older runtimes refuse a newer one


def _torch() -> Any:  # torch passes through this module untyped: its tensors are Any
    import torch

    return torch


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# multiply-adds per thread: below this a step is too small to split (measured: a 64-32 MLP
# on 256-row batches trains 4-10x slower on two threads than on one, worse on a busy machine)
_WORK_PER_THREAD = 1 << 24


_thread_lock = threading.Lock()
_thread_users = 0  # calls inside _threads now, in any thread
_threads_before = 0  # torch's thread count when the first of them entered


@contextlib.contextmanager
def _threads(torch: Any, work: int) -> Iterator[None]:
    """torch's intra-op threads for steps of `work` multiply-adds: one per _WORK_PER_THREAD,
    at most torch's current count and the CPUs this process may use (torch's default counts
    the machine's cores, which oversubscribes a container). The count is restored on exit;
    when calls overlap in several threads, the last to leave restores the first's."""
    global _thread_users, _threads_before
    with _thread_lock:
        before = torch.get_num_threads()
        if _thread_users == 0:
            _threads_before = before
        _thread_users += 1
        wanted = max(1, min(before, _cpu_count(), int(work) // _WORK_PER_THREAD))
        if wanted != before:
            torch.set_num_threads(wanted)
    try:
        yield
    finally:
        with _thread_lock:
            _thread_users -= 1
            restore = _threads_before if _thread_users == 0 else before
            if torch.get_num_threads() != restore:
                torch.set_num_threads(restore)


def _work(sizes: Sequence[int], rows: int) -> int:
    """Multiply-adds of one forward pass of `rows` rows through layers of `sizes`."""
    return rows * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def _resolve_device(torch: Any, name: str) -> Any:
    """The torch device `name` names: 'cpu', 'cuda' or 'cuda:N'. RuntimeError when it is a
    CUDA device this process cannot see, ValueError for anything else."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {name!r}") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {name!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} was requested, but no CUDA device is visible to this process "
            "(torch.cuda.is_available() is False: no GPU, no driver, CUDA_VISIBLE_DEVICES "
            f"hides it, or torch {torch.__version__} is a CPU-only build); train with "
            "device='cpu'"
        )
    count = torch.cuda.device_count()
    index = 0 if device.index is None else device.index
    if index >= count:
        raise RuntimeError(
            f"device {name!r} was requested, but only {count} CUDA device(s) are visible"
        )
    return torch.device("cuda", index)


def _validate(estimator: Any, X: Any, y: Any = "no_validation", *, reset: bool,
              **kwargs: Any) -> Any:
    """scikit-learn's input validation (float64, finite, 2-D, no sparse input; sets or checks
    n_features_in_ and feature_names_in_; y too unless 'no_validation', and None is refused
    as scikit-learn does), whichever way this scikit-learn offers it."""
    if _validate_data is not None:
        return _validate_data(estimator, X, y, reset=reset, dtype=np.float64, **kwargs)
    # scikit-learn < 1.6: the estimator's own method
    return estimator._validate_data(X, y, reset=reset, dtype=np.float64, **kwargs)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# each fitted estimator's torch module, with the layers_ it was built from
_modules: weakref.WeakKeyDictionary[_MLP, tuple[list[tuple[np.ndarray, np.ndarray]], Any]] = (
    weakref.WeakKeyDictionary())


class _MLP(BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no types
    """What the classifier and the regressor share: parameters, input scaling, the training
    loop, the network as numpy arrays, the lazily rebuilt torch module."""

    def __init__(
        self,
        hidden_layers: Sequence[int] = (64, 32),
        epochs: int = 20,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        random_state: int = 0,
        device: str = "cpu",
    ) -> None:
        self.hidden_layers = hidden_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.random_state = random_state
        self.device = device

    # -- parameters ------------------------------------------------------------------------

    def _check_params(self) -> tuple[int, ...]:
        """The hidden layer sizes; ValueError for a parameter out of its range."""
        layers = self.hidden_layers
        hidden: tuple[Any, ...]  # checked below: a single number is refused too
        try:
            hidden = tuple(layers) if layers is not None else ()
        except TypeError:
            hidden = (layers,)
        if not all(_is_int(h) and h > 0 for h in hidden):
            raise ValueError(f"hidden_layers must be a sequence of positive integers, got "
                             f"{layers!r}")
        for name, low in (("epochs", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if not (_is_int(value) and value >= low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        ranges: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
            ("learning_rate", lambda v: v > 0, "> 0"),
            ("weight_decay", lambda v: v >= 0, ">= 0"),
            ("dropout", lambda v: 0 <= v < 1, "in [0, 1)"))
        for name, ok, rule in ranges:
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and ok(value)):
                raise ValueError(f"{name} must be a number {rule}, got {value!r}")
        if not (self.random_state is None or _is_int(self.random_state)):
            raise ValueError(f"random_state must be an integer or None, got "
                             f"{self.random_state!r}")
        return tuple(int(h) for h in hidden)

    def _seed(self) -> int:
        """random_state, or a fresh seed for None (scikit-learn's 'not reproducible')."""
        if self.random_state is None:
            return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
        return int(self.random_state)

    # -- fitting ---------------------------------------------------------------------------

    def _prepare(self) -> tuple[tuple[int, ...], Any]:
        """Before any work: the checked hidden layer sizes and the torch device to train on
        (ValueError for a bad parameter, RuntimeError for a CUDA device not visible)."""
        hidden = self._check_params()
        return hidden, _resolve_device(_torch(), self.device)

    def _fit_network(self, X: np.ndarray, target: np.ndarray, n_outputs: int, loss: str,
                     hidden: tuple[int, ...], device: Any) -> None:
        """Train the MLP on X (standardised here); `target` is class indices (loss
        'cross_entropy') or the standardised target (loss 'mse'). Sets layers_, loss_curve_."""
        torch = _torch()
        seed = self._seed()
        sizes = (X.shape[1], *hidden, n_outputs)
        cuda = [device.index] if device.type == "cuda" else []
        work = _work(sizes, min(len(X), int(self.batch_size)))
        with _threads(torch, work), torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            network = _network(torch, sizes, float(self.dropout)).to(device)
            shuffle = torch.Generator().manual_seed(seed)
            inputs = torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))
            inputs = inputs.to(device)
            if loss == "cross_entropy":
                targets = torch.from_numpy(target.astype(np.int64)).to(device)
                criterion = torch.nn.CrossEntropyLoss()
            else:
                targets = torch.from_numpy(target.astype(np.float32).reshape(-1, 1)).to(device)
                criterion = torch.nn.MSELoss()
            optimiser = torch.optim.Adam(network.parameters(), lr=float(self.learning_rate),
                                         weight_decay=float(self.weight_decay))
            rows, batch = len(inputs), int(self.batch_size)
            curve = []
            network.train()
            for _ in range(int(self.epochs)):
                order = torch.randperm(rows, generator=shuffle).to(device)
                total = torch.zeros((), device=device)
                for start in range(0, rows, batch):
                    index = order[start:start + batch]
                    optimiser.zero_grad(set_to_none=True)
                    value = criterion(network(inputs[index]), targets[index])
                    value.backward()
                    optimiser.step()
                    total += value.detach() * len(index)
                curve.append(total)
            linear = [m for m in network if isinstance(m, torch.nn.Linear)]
            self.layers_ = [(m.weight.detach().cpu().numpy().copy(),
                             m.bias.detach().cpu().numpy().copy()) for m in linear]
            self.loss_curve_ = [float(v) / rows for v in curve]
        self.n_iter_ = int(self.epochs)

    def _fit_scaling(self, X: np.ndarray) -> None:
        """The input standardisation: each column's mean and standard deviation."""
        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[~(scale > 1e-12)] = 1.0  # a constant column: centred only
        # stored as float32, the precision the model and its ONNX graph compute in
        self.mean_, self.scale_ = mean.astype(np.float32), scale.astype(np.float32)

    # -- predicting ------------------------------------------------------------------------

    def _module_for_cpu(self, torch: Any) -> Any:
        """The network as a torch module in eval mode on CPU, built from layers_ once per
        fit (kept outside the estimator's __dict__: never pickled or cloned, and predicting
        changes no attribute, as scikit-learn expects)."""
        layers = self.layers_
        cached = _modules.get(self)
        if cached is not None and cached[0] is layers:
            return cached[1]
        sizes = (layers[0][0].shape[1], *(w.shape[0] for w, _ in layers))
        module = _network(torch, sizes, 0.0)
        linear = [m for m in module if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for layer, (weight, bias) in zip(linear, layers, strict=True):
                layer.weight.copy_(torch.from_numpy(weight))
                layer.bias.copy_(torch.from_numpy(bias))
        module.eval()
        _modules[self] = (layers, module)
        return module

    def _outputs(self, X: Any) -> np.ndarray:
        """The network's output (logits or standardised prediction) on X, float32 on CPU,
        computed as the ONNX graph does: ((float32(X) - mean) / scale) through the layers."""
        check_is_fitted(self, "layers_")
        array = _validate(self, X, reset=False)
        torch = _torch()
        sizes = (self.n_features_in_, *(w.shape[0] for w, _ in self.layers_))
        with _threads(torch, _work(sizes, len(array))), torch.inference_mode():
            inputs = torch.from_numpy(array.astype(np.float32))
            scaled = (inputs - torch.from_numpy(self.mean_)) / torch.from_numpy(self.scale_)
            return cast(np.ndarray, self._finish(torch, self._module_for_cpu(torch)(scaled)).numpy())

    def _finish(self, torch: Any, output: Any) -> Any:
        return output


def _network(torch: Any, sizes: Sequence[int], dropout: float) -> Any:
    """Linear layers of `sizes` (inputs, hidden..., outputs), ReLU and, when training with
    dropout, Dropout after each hidden layer."""
    layers: list[Any] = []
    for index, (inputs, outputs) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(torch.nn.Linear(inputs, outputs))
        if index < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
            if dropout > 0:
                layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers)


class MLPClassifier(ClassifierMixin, _MLP):  # type: ignore[misc]  # scikit-learn: no types
    """A ReLU MLP classifier (binary or multiclass; labels of any sortable type, `classes_`
    sorted as scikit-learn does) trained with Adam on cross-entropy.

    hidden_layers: units per hidden layer; epochs: passes over the data; batch_size: rows per
    step; learning_rate, weight_decay: Adam's; dropout: after each hidden layer while
    training; random_state: the seed; device: where `fit` trains ('cpu', 'cuda', 'cuda:N').
    """

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Fit on X (rows x features, floats) and the labels y; returns self."""
        hidden, device = self._prepare()
        array, labels = _validate(self, X, y, reset=True)
        check_classification_targets(labels)
        self.classes_, index = np.unique(labels, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y holds one class ({self.classes_[0]!r}); a classifier needs "
                             "samples of at least 2 classes")
        self._fit_scaling(array)
        self._fit_network(array, index.reshape(-1), len(self.classes_), "cross_entropy",
                          hidden, device)
        return self

    def _finish(self, torch: Any, output: Any) -> Any:
        return torch.softmax(output, dim=1)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one column per class in `classes_` order."""
        return self._outputs(X).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row (the first on a tie, as ONNX's ArgMax)."""
        proba = self._outputs(X)
        # classes_ is np.unique's, set on an estimator whose scikit-learn base is untyped
        return cast(np.ndarray, self.classes_[np.argmax(proba, axis=1)])


class MLPRegressor(RegressorMixin, _MLP):  # type: ignore[misc]  # scikit-learn: no types
    """A ReLU MLP regressor trained with Adam on the mean squared error of the standardised
    target; predictions are in the target's units.

    Parameters as MLPClassifier's.
    """

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Fit on X (rows x features, floats) and the numeric target y; returns self."""
        hidden, device = self._prepare()
        array, target = _validate(self, X, y, reset=True, y_numeric=True)
        self._fit_scaling(array)
        mean, scale = float(target.mean()), float(target.std())
        scale = scale if scale > 1e-12 else 1.0
        self.target_mean_ = np.float32(mean)
        self.target_scale_ = np.float32(scale)
        standardised = (target - self.target_mean_) / self.target_scale_
        self._fit_network(array, standardised, 1, "mse", hidden, device)
        return self

    def _finish(self, torch: Any, output: Any) -> Any:
        return output * float(self.target_scale_) + float(self.target_mean_)

    def predict(self, X: Any) -> np.ndarray:
        """The predicted target of each row (float64 of the float32 computation)."""
        return self._outputs(X)[:, 0].astype(np.float64)


def _label_tensor(classes: np.ndarray) -> Any:
    """The classes as an ONNX constant the label output gathers from."""
    from onnx import numpy_helper

    kind = classes.dtype.kind
    if kind == "b":
        values = classes.astype(np.bool_)
    elif kind in "iu":
        values = classes.astype(np.int64)
    elif kind == "f":
        values = classes.astype(np.float64)
    elif kind in "US" or (kind == "O" and all(isinstance(c, str) for c in classes)):
        values = np.array([str(c) for c in classes], dtype=object)
    else:
        raise TypeError(f"classes of dtype {classes.dtype} have no ONNX tensor type")
    return numpy_helper.from_array(values, "classes")


def to_onnx(model: MLPClassifier | MLPRegressor, n_features: int) -> bytes:
    """The fitted model as ONNX bytes (opset ONNX_OPSET): input 'X', float32, shape
    (batch, n_features) with a dynamic batch dimension. The classifier's outputs are 'label'
    (batch,), the predicted class, and 'probabilities' (batch, n_classes) in `classes_`
    order, as skl2onnx's classifiers without zipmap; the regressor's is 'variable'
    (batch, 1). The input standardisation is part of the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_is_fitted(model, "layers_")
    if int(n_features) != model.n_features_in_:
        raise ValueError(f"n_features is {n_features}, but the model was fitted with "
                         f"{model.n_features_in_} features")
    initializers = [numpy_helper.from_array(model.mean_.astype(np.float32), "mean"),
                    numpy_helper.from_array(model.scale_.astype(np.float32), "scale")]
    nodes = [helper.make_node("Sub", ["X", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "scale"], ["h0"])]
    current = "h0"
    last = len(model.layers_) - 1
    for index, (weight, bias) in enumerate(model.layers_):
        initializers += [numpy_helper.from_array(weight.astype(np.float32), f"W{index}"),
                         numpy_helper.from_array(bias.astype(np.float32), f"B{index}")]
        out = f"z{index}"
        nodes.append(helper.make_node("Gemm", [current, f"W{index}", f"B{index}"], [out],
                                      transB=1))
        if index < last:
            current = f"h{index + 1}"
            nodes.append(helper.make_node("Relu", [out], [current]))
        else:
            current = out
    batch = "batch"
    if isinstance(model, MLPClassifier):
        classes = _label_tensor(model.classes_)
        initializers.append(classes)
        nodes += [helper.make_node("Softmax", [current], ["probabilities"], axis=1),
                  helper.make_node("ArgMax", ["probabilities"], ["label_index"], axis=1,
                                   keepdims=0),
                  helper.make_node("Gather", ["classes", "label_index"], ["label"], axis=0)]
        outputs = [helper.make_tensor_value_info("label", classes.data_type, [batch]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                 [batch, len(model.classes_)])]
    else:
        initializers += [
            numpy_helper.from_array(np.array([model.target_scale_], np.float32), "y_scale"),
            numpy_helper.from_array(np.array([model.target_mean_], np.float32), "y_mean")]
        nodes += [helper.make_node("Mul", [current, "y_scale"], ["scaled"]),
                  helper.make_node("Add", ["scaled", "y_mean"], ["variable"])]
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [batch, 1])]
    graph = helper.make_graph(
        nodes, type(model).__name__,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, int(n_features)])],
        outputs, initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="mlstack.runtime.tabular_mlp",
                              ir_version=_ONNX_IR_VERSION)
    onnx.checker.check_model(proto)
    return cast(bytes, proto.SerializeToString())  # onnx's protobuf messages are untyped
