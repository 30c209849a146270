"""The training set, split, fit and evaluation of a project with target.compute, on Ray.

    files = write_training_set(rows, store, label, fetch_columns, out_dir)   Ray Data, Feast
    train_ids, test_ids = split_rows(files, label, split)                  split_frame's split
    fitted = fit_on_ray(files, train_ids, build, model_frame, label, compute)
    scores = evaluate_on_ray(files, test_ids, fitted.model, model_frame, label, metrics, gates)

The joined training set never comes into the flow's process: Feast's Ray offline store joins
the label rows with the features point-in-time in Ray Data blocks and the workers write it as
parquet under the state folder. The flow reads back only narrow columns (row id, keys, time,
group, label) to split. Each row has the id of its place in the order `training.training_set`
gives (label time, keys), assigned before the join, so the split and the order of each part
are the single-process path's exactly.

Training: 'ray_task' fits the estimator in one Ray task on a worker, on the train part in the
single-process order (the same model, bit for bit, for a deterministic estimator).
'ray_train' fits data-parallel with Ray Train (XGBoost's or LightGBM's backend): each of
`workers` workers reads its own shard (every workers-th train row, so shards are the same in
every run) and fits the same scikit-learn estimator; XGBoost's collective (set up by Ray
Train around the training loop) and LightGBM's socket network (tree_learner='data') make the
shards one model. Rank 0 checkpoints it under the state folder. Its metrics differ from a
single-process fit by what data-parallel histograms change (tests measure it).

Evaluation runs runtime.evaluation.evaluate_model in one Ray task on a worker, which reads the
held-out part itself: the same metrics and gates as the single-process path.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlstack.runtime import training
from mlstack.runtime.logs import Logger, logger_for

if TYPE_CHECKING:
    from ray.train.data_parallel_trainer import DataParallelTrainer

    from mlstack.runtime.evaluation import Gate
    from mlstack.runtime.ray_cluster import RayCompute

__all__ = ["FitResult", "TrainingSetFiles", "evaluate_on_ray", "fit_on_ray", "read_part",
           "split_rows", "write_training_set"]

# Columns the Ray path adds to the training set files (never model input).
ROW = "__mlstack_row"  # the row's place in training_set's order
NODE = "__mlstack_node"  # the Ray node that joined and wrote the row
# The event time column Feast's offline stores read from an entity frame.
EVENT_TIMESTAMP = "event_timestamp"
# LightGBM parameters Ray Train's network adds; stripped from the fitted model.
LIGHTGBM_NETWORK = ("local_listen_port", "machines", "num_machines", "tree_learner",
                    "pre_partition")


@dataclass(frozen=True)
class TrainingSetFiles:
    """The training set as parquet files the workers wrote: its folder, row count, the label
    rows left out (no feature value in the TTL window) and the nodes that wrote it."""

    path: str
    rows: int
    left_out: int
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class FitResult:
    """A fitted model and the Ray nodes its fit ran on."""

    model: Any
    nodes: tuple[str, ...]


def _event_time(values: pd.Series) -> pd.Series:
    # as FeatureStoreAccess.historical_features sends it: UTC, microseconds
    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]").dt.floor("us")


def write_training_set(
    rows: pd.DataFrame,
    store: Any,
    label: training.LabelSpec,
    fetch_columns: Sequence[str],
    out_dir: str | Path,
    *,
    logger: Logger | None = None,
) -> TrainingSetFiles:
    """Point-in-time join of the label rows (`training.label_rows`) with the model's features
    through the store's offline store (Feast's Ray offline store: `store` is the project's
    FeatureStoreAccess), rows missing a fetched feature left out with training_set's warning,
    written as parquet to `out_dir` by the workers. An empty result raises ValueError."""
    import ray

    store.stage_sources()
    ordered = rows.sort_values([label.timestamp, *label.keys], kind="stable")
    entity = ordered.reset_index(drop=True)
    entity[ROW] = np.arange(len(entity), dtype=np.int64)
    # Feast reads the entity rows' time from event_timestamp (the label's time column, or a
    # copy of it dropped after the join)
    entity[EVENT_TIMESTAMP] = _event_time(entity[label.timestamp])
    job = store.get_store().get_historical_features(
        entity_df=entity, features=store.feature_service(), full_feature_names=True)
    dataset = job.to_ray_dataset()
    fetch = list(fetch_columns)
    # the label rows' columns, the row id and the features: the Ray store's own bookkeeping
    # columns (__batch_index, __filename, ...) are left behind
    columns = list(dict.fromkeys([*rows.columns, ROW, *fetch]))

    def complete_rows(batch: pd.DataFrame) -> pd.DataFrame:
        kept = batch.loc[~batch[fetch].isna().any(axis=1), columns]
        return kept.assign(**{NODE: ray.get_runtime_context().get_node_id()})

    out = Path(out_dir)
    dataset.map_batches(complete_rows, batch_format="pandas").write_parquet(str(out))
    narrow = pd.read_parquet(out, columns=[ROW, NODE])
    left_out = len(entity) - len(narrow)
    if left_out:
        logger_for(logger).warning(
            "%d of %d label rows have no feature values in their TTL window; left out of training",
            left_out, len(entity))
    if narrow.empty:
        raise ValueError("the training set is empty: no label row has feature values")
    return TrainingSetFiles(str(out), len(narrow), left_out,
                            tuple(sorted(narrow[NODE].unique())))


def _label_columns(label: training.LabelSpec) -> list[str]:
    group = [label.group_by] if label.group_by else []
    return list(dict.fromkeys([*label.keys, *group, label.timestamp, label.column]))


def split_rows(files: TrainingSetFiles, label: training.LabelSpec,
               split: training.Split) -> tuple[np.ndarray, np.ndarray]:
    """The row ids of the train and test parts, each in its part's order: training.split_frame
    on the narrow columns (keys, group, time, label) in training_set's order."""
    narrow = pd.read_parquet(files.path, columns=[ROW, *_label_columns(label)])
    narrow = narrow.sort_values(ROW).reset_index(drop=True)
    train, test = training.split_frame(narrow, label, split)
    return train[ROW].to_numpy(), test[ROW].to_numpy()


def read_part(path: str | Path, row_ids: Sequence[int]) -> pd.DataFrame:
    """The rows `row_ids` of the training set files, in that order, without the Ray path's
    own columns (what training_set and split_frame give in one process)."""
    ids = [int(i) for i in row_ids]
    frame = pd.read_parquet(path, filters=[(ROW, "in", ids)] if ids else None)
    frame = frame.set_index(ROW).loc[ids].reset_index(drop=True)
    return frame.drop(columns=[NODE])


def read_model_input(path: str | Path, row_ids: Sequence[int],
                     model_frame: Callable[[pd.DataFrame], pd.DataFrame],
                     label: training.LabelSpec,
                     batch_rows: int = 65536) -> tuple[pd.DataFrame, pd.Series]:
    """The model input (`model_frame` of the rows, as float32) and the label of the rows
    `row_ids` of the training set files, read batch by batch: a worker holds its shard's
    model columns once, in float32 (what xgboost trains on; lightgbm bins them), never the
    whole files or a float64 frame of them. Rows come in the files' order."""
    import pyarrow.dataset as pads

    wanted = np.sort(np.asarray(row_ids, dtype=np.int64))
    if not len(wanted):
        raise ValueError("no training rows were asked for")
    # one batch at a time (no read-ahead of whole files), kept rows picked in numpy: a
    # worker's memory holds its share of the model columns, the sorted ids and one batch
    scanner = pads.dataset(str(path), format="parquet").scanner(
        batch_size=batch_rows, batch_readahead=0, fragment_readahead=0, use_threads=False)
    inputs: np.ndarray | None = None
    target: np.ndarray | None = None
    columns: list[str] = []
    at = 0
    for batch in scanner.to_batches():
        ids = batch.column(ROW).to_numpy()
        place = np.minimum(np.searchsorted(wanted, ids), len(wanted) - 1)
        keep = wanted[place] == ids
        if not keep.any():
            continue
        frame = batch.filter(keep).to_pandas().drop(columns=[NODE], errors="ignore")
        model_input = model_frame(frame)
        if inputs is None or target is None:  # the first batch (both are set together)
            columns = list(model_input.columns)
            inputs = np.empty((len(wanted), len(columns)), dtype=np.float32)
            target = np.empty(len(wanted), dtype=frame[label.column].to_numpy().dtype)
        inputs[at:at + len(frame)] = model_input.to_numpy(dtype=np.float32)
        target[at:at + len(frame)] = frame[label.column].to_numpy()
        at += len(frame)
    if inputs is None or at != len(wanted):
        raise ValueError(f"the training set files hold {at} of the {len(wanted)} rows asked")
    return (pd.DataFrame(inputs, columns=columns, copy=False),
            pd.Series(target, name=label.column))


# -- fitting -----------------------------------------------------------------------------

def _fit_task(path: str, train_ids: Sequence[int], build: Callable[[str], Any], device: str,
              model_frame: Callable[[pd.DataFrame], pd.DataFrame], label: training.LabelSpec,
              group_fit: str | None) -> tuple[Any, str]:
    import ray

    frame = read_part(path, train_ids)
    model = training.fit(build(device), frame, label, model_frame, group_fit=group_fit)
    return model, ray.get_runtime_context().get_node_id()


def _strip_lightgbm_network(model: Any) -> None:
    """Forget the fit's network settings: the model predicts alone."""
    other = getattr(model, "_other_params", {})
    for name in LIGHTGBM_NETWORK:
        other.pop(name, None)
        if name in vars(model):
            delattr(model, name)
    booster = getattr(model, "_Booster", None)
    if booster is not None:
        for name in LIGHTGBM_NETWORK:
            booster.params.pop(name, None)


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: fit the estimator on this rank's shard under the collective."""
    import ray
    import ray.train

    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    # this rank's share of the train rows, from the file the driver wrote (memory-mapped:
    # a worker does not unpickle every row id of the training set)
    train_ids = np.load(config["train_ids_file"], mmap_mode="r")[rank::size]
    inputs, target = read_model_input(config["path"], train_ids, config["model_frame"],
                                      config["label"])
    estimator = config["build"](config["device"])
    if config["framework"] == "lightgbm":
        from ray.train.lightgbm import get_network_params

        estimator.set_params(**get_network_params(), tree_learner="data", pre_partition=True)
    elif config["framework"] == "xgboost":
        import xgboost

        if xgboost.collective.get_world_size() != size:
            raise RuntimeError("xgboost's collective is not set up across the Ray Train workers")
    model = estimator.fit(inputs, target)
    rows = len(inputs)
    del inputs, target
    nodes = Path(config["nodes_dir"])
    nodes.mkdir(parents=True, exist_ok=True)
    (nodes / f"rank-{rank}").write_text(ray.get_runtime_context().get_node_id())
    if rank != 0:
        ray.train.report({"rows": rows})
        return
    if config["framework"] == "lightgbm":
        _strip_lightgbm_network(model)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "model.pkl").write_bytes(pickle.dumps(model))
        ray.train.report({"rows": rows},
                         checkpoint=ray.train.Checkpoint.from_directory(folder))


def fit_on_ray(
    files: TrainingSetFiles,
    train_ids: np.ndarray,
    build: Callable[[str], Any],
    model_frame: Callable[[pd.DataFrame], pd.DataFrame],
    label: training.LabelSpec,
    compute: RayCompute,
    *,
    framework: str,
    storage_dir: str | Path,
    device: str = "cpu",
    group_fit: str | None = None,
) -> FitResult:
    """Fit `build(device)` (the flow's estimator) on the train rows on the cluster, as
    compute.train_engine says; `storage_dir` holds Ray Train's run (checkpoint, node ids)."""
    import ray

    if compute.train_engine != "ray_train":
        ids = [int(i) for i in train_ids]
        task = ray.remote(num_cpus=compute.worker_cpu)(_fit_task)
        model, node = ray.get(task.remote(files.path, ids, build, device, model_frame, label,
                                          group_fit))
        return FitResult(model, (node,))
    from ray.train import RunConfig, ScalingConfig

    Trainer: type[DataParallelTrainer]
    if framework == "xgboost":
        from ray.train.xgboost import XGBoostTrainer as Trainer
    elif framework == "lightgbm":
        from ray.train.lightgbm import LightGBMTrainer as Trainer
    else:
        raise ValueError(f"Ray Train has no {framework!r} trainer in mlstack")
    storage = Path(storage_dir).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    ids_file = storage / "train_ids.npy"
    np.save(ids_file, np.asarray(train_ids, dtype=np.int64))
    config = {"path": files.path, "train_ids_file": str(ids_file), "build": build,
              "device": device,
              "model_frame": model_frame, "label": label, "framework": framework,
              "nodes_dir": str(storage / "nodes")}
    trainer = Trainer(
        train_loop_per_worker=_train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=compute.workers,
                                     resources_per_worker={"CPU": compute.worker_cpu}),
        run_config=RunConfig(storage_path=str(storage.parent), name=storage.name),
    )
    result = trainer.fit()
    if result.checkpoint is None:  # rank 0 reports one whenever the fit succeeds
        raise RuntimeError(f"Ray Train's run under {storage} ended without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        model = pickle.loads((Path(folder) / "model.pkl").read_bytes())
    nodes = tuple(sorted({p.read_text() for p in (storage / "nodes").glob("rank-*")}))
    return FitResult(model, nodes)


# -- evaluation --------------------------------------------------------------------------

def _evaluate_task(path: str, test_ids: Sequence[int], model: Any,
                   model_frame: Callable[[pd.DataFrame], pd.DataFrame],
                   label: training.LabelSpec, metrics: Sequence[str],
                   gates: Sequence[Gate]) -> tuple[dict[str, Any], str]:
    import ray

    from mlstack.runtime.evaluation import evaluate_model

    frame = read_part(path, test_ids)
    scores = evaluate_model(model, frame, model_frame, label, metrics, gates)
    return scores, ray.get_runtime_context().get_node_id()


def evaluate_on_ray(
    files: TrainingSetFiles,
    test_ids: np.ndarray,
    model: Any,
    model_frame: Callable[[pd.DataFrame], pd.DataFrame],
    label: training.LabelSpec,
    metrics: Sequence[str],
    gates: Sequence[Gate] = (),
    *,
    cpu: float = 1,
) -> tuple[dict[str, Any], str]:
    """evaluate_model on the held-out rows, in one Ray task on a worker that reads them
    itself; returns (its result, the node). A failed gate raises QualityGateError."""
    import ray

    task = ray.remote(num_cpus=cpu, max_retries=0)(_evaluate_task)
    ref = task.remote(files.path, [int(i) for i in test_ids], model, model_frame, label,
                      list(metrics), list(gates))
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        raise error.cause from None


def node_ids(record: Mapping[str, Sequence[str]]) -> set[str]:
    """Every node id of a compute record's `nodes` (step -> ids)."""
    return {n for ids in record.values() for n in ids}
