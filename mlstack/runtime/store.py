"""Feast access for training, serving and deploy: one object per generated project.

    store = FeatureStoreAccess(repo_dir=..., state_dir=..., project_dir=..., ...)
    store.get_store()              -> feast.FeatureStore (cached; config from feature_store.yaml)
    store.apply()                  register what feature_repo/repo.py defines (like `feast apply`)
    store.materialize(end=None)    load the online store up to `end` (default: now)
    store.online_rows(keys)        key tuples -> which were found + their fetched columns as
                                   numpy arrays in the spec's dtypes (the service's input path)
    store.online_features(rows)    request rows + fetched features ('view__field'), same order
    store.historical_features(df)  entity rows + point-in-time features, same order

Online reads of a SQLite online store go straight to the rows Feast wrote
(mlstack.runtime.online_read: Feast's key serialization and value decoding, no Feast call per
request), once that read answered what Feast's `get_online_features` answers for a sample of
the stored keys and an unknown one; otherwise, or with MLSTACK_ONLINE_READ=feast, through
Feast. `store.online_read_path()` says which and why.

Online reads enforce each view's TTL as the point-in-time join does: a value whose event time
is older than the view's TTL at the time of the request is null (Feast's online store returns
it; the offline join would not).

The registry and the online store live under `state_dir` (feature_store.yaml refers to it as
${MLSTACK_STATE_DIR}); source files under `project_dir`. Feast is imported on first use, so
building the object (and reading `source_path`) does not load it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from mlstack.runtime.sources import SourceSpec, read_source
from mlstack.runtime.state import write_json

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView, RepoConfig

__all__ = ["EPOCH", "FeatureStoreAccess", "OnlineRows", "SourceFile", "expand_variables"]

# Where materialize starts for a feature view that was never materialized (all history).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VARIABLE = re.compile(r"\$\{(\w+)\}")
_QUERY_ROW = "__mlstack_query_row"  # an entity row's place in a historical query
_TS = "__mlstack_ts"
# The variable in feature_store.yaml that stands for the state folder.
STATE_DIR_VARIABLE = "MLSTACK_STATE_DIR"
# numpy dtypes online values are read into, by spec dtype (strings, timestamps: objects).
NUMPY_DTYPES: dict[str, type[Any]] = {"int64": np.int64, "int32": np.int32, "float64": np.float64,
                                   "float32": np.float32, "bool": np.bool_}
# The suffix of the event-time columns of Feast's OnlineResponse.to_dict(True).
_TS_SUFFIX = "__ts"
# 'feast' reads online features through Feast's get_online_features even where the direct
# read of the online store would answer the same (a switch for comparing the two)
ONLINE_READ_ENV = "MLSTACK_ONLINE_READ"
ONLINE_READ_CHECK_KEYS = 32  # stored keys the direct read must answer as Feast does


class OnlineRows(NamedTuple):
    """Online features of a list of keys: `found` (bool per key: every fetched value present
    and inside its view's TTL) and `columns` (fetched column -> array of the found keys'
    values, in the spec's dtype, in key order)."""

    found: np.ndarray
    columns: dict[str, np.ndarray]


@dataclass(frozen=True)
class SourceFile:
    """A file a feature view reads: its format ('parquet' or 'csv') and path relative to the
    project folder. A CSV source also lists its declared columns (column -> spec dtype): Feast
    reads only parquet, so CSV sources are staged as parquet read with these types."""

    format: str
    path: str
    columns: Mapping[str, str] = field(default_factory=dict)


def expand_variables(value: Any, variables: Mapping[str, str],
                     defaults: Mapping[str, str] | None = None) -> Any:
    """`value` (parsed YAML: dicts, lists, strings) with every ${NAME} in its strings replaced
    by variables[NAME], else the environment's NAME, else defaults[NAME]; a name in none of
    them raises RuntimeError. Expanding after parsing keeps any folder name safe."""
    defaults = defaults or {}

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return variables[name]
        if name in os.environ and (os.environ[name] or name not in defaults):
            return os.environ[name]
        if name in defaults:
            return defaults[name]
        raise RuntimeError(f"feature_store.yaml needs the environment variable {name}")

    def expand(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: expand(v) for k, v in item.items()}
        if isinstance(item, str):
            return _VARIABLE.sub(variable, item)
        return item

    return expand(value)


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# Per view: the source rows at or before the last materialize's end (their count and the sum
# of their event times). Incremental materialization loads only rows newer than that end; a
# source whose history was rewritten (redated, replaced, rows removed or added in the past)
# is loaded again in full, so the online store does not keep rows the source no longer has.
# (A value changed in place, its event time kept, is not seen.)
HISTORY_FILE = "materialized_history.json"


def _rows_up_to(view: FeatureView, end: datetime | None) -> list[int] | None:
    """[count, sum of event times in microseconds] of the view's source rows at or before
    `end` (None: cannot tell): appended newer rows leave both as they were; a redate, a row
    added or removed in the past moves one."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = view.batch_source
    path, column = getattr(source, "path", None), getattr(source, "timestamp_field", None)
    if end is None or not path or not column:
        return None
    files = sorted(Path(path).glob("**/*.parquet")) if Path(path).is_dir() else [Path(path)]
    try:
        count, total = 0, 0
        for file in files:
            times = pq.read_table(file, columns=[column]).column(column)
            stamp = pd.Timestamp(end)
            stamp = stamp.tz_convert(None) if times.type.tz is None and stamp.tz else stamp
            kept = pc.filter(times, pc.less_equal(times, stamp.to_pydatetime()))
            micros = pc.cast(pc.cast(kept, pa.timestamp("us", tz=times.type.tz)), pa.int64())
            count += len(kept)
            total += int(pc.sum(micros).as_py() or 0)
        return [count, total]
    except Exception:  # unreadable here: Feast reports it when it reads the file
        return None


def _history_rewritten(before: dict[str, Any] | None, now: list[int] | None) -> bool:
    """Whether the rows up to the last run's end are not the ones that run loaded."""
    if not before or now is None or before.get("rows") is None:
        return False
    return bool(before["rows"] != now)


def _read_history(path: Path) -> dict[str, dict[str, Any]]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rows_after(view: FeatureView) -> bool:
    """Whether the view's parquet source may hold a row newer than the view's last
    materialization (from the files' column statistics; True when they cannot tell)."""
    import pyarrow.parquet as pq

    since = view.most_recent_end_time
    source = view.batch_source
    path, column = getattr(source, "path", None), getattr(source, "timestamp_field", None)
    if since is None or not path or not column:
        return True
    files = sorted(Path(path).glob("**/*.parquet")) if Path(path).is_dir() else [Path(path)]
    try:
        for file in files:
            meta = pq.ParquetFile(file).metadata
            index = meta.schema.to_arrow_schema().get_field_index(column)
            if index < 0:
                return True
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(index).statistics
                if stats is None or not stats.has_min_max or _utc(stats.max) > _utc(since):
                    return True
    except (OSError, ValueError, KeyError):
        return True
    return False


class FeatureStoreAccess:
    """The generated project's Feast store: configuration and the operations training,
    serving and deploy use.

    repo_dir: the feature repo (feature_store.yaml, repo.py); state_dir: registry, online
    store and staged sources; project_dir: what source paths are relative to;
    feature_service: the model's Feast feature service; request_keys: the entity join keys a
    request carries; fetch_columns: the features as they arrive ('view__field');
    sources: the files the feature views read; timestamp_column: the entity rows' time column
    historical_features uses by default; repo_module: the name repo.py is imported under;
    fetch_dtypes: each fetched column's spec dtype (default float64); ttl_seconds: each
    feature view's TTL (0 or absent: none); clock: the time of a request (seconds since the
    epoch) that TTLs are measured from; variable_defaults: values of feature_store.yaml's
    ${VARIABLES} when the environment has none (the spec's Ray address).

    `get_store` and `feature_service` are cached per object (one Feast store per process);
    `get_store.cache_clear()` and `feature_service.cache_clear()` forget them.
    """

    def __init__(
        self,
        *,
        repo_dir: str | Path,
        state_dir: str | Path,
        project_dir: str | Path,
        feature_service: str,
        request_keys: Sequence[str],
        fetch_columns: Sequence[str],
        sources: Mapping[str, SourceFile],
        timestamp_column: str = "event_timestamp",
        repo_module: str = "mlstack_feature_repo",
        fetch_dtypes: Mapping[str, str] | None = None,
        ttl_seconds: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.time,
        variable_defaults: Mapping[str, str] | None = None,
    ) -> None:
        self.repo_dir = Path(repo_dir)
        self.state_dir = Path(state_dir)
        self.project_dir = Path(project_dir)
        self.feature_service_name = feature_service
        self.request_keys = tuple(request_keys)
        self.fetch_columns = tuple(fetch_columns)
        self.sources = dict(sources)
        self.timestamp_column = timestamp_column
        self.repo_module = repo_module
        dtypes = dict(fetch_dtypes or {})
        self.fetch_dtypes = {c: dtypes.get(c, "float64") for c in self.fetch_columns}
        ttls = dict(ttl_seconds or {})
        # each fetched column's view TTL ('view__field' -> seconds); views without one omitted
        self._column_ttl = {c: ttls[c.split("__", 1)[0]] for c in self.fetch_columns
                            if ttls.get(c.split("__", 1)[0])}
        self.clock = clock
        self.variable_defaults = dict(variable_defaults or {})
        # per object, so that two projects in one process do not share a store
        self.get_store = functools.lru_cache(maxsize=1)(self._open_store)
        self.feature_service = functools.lru_cache(maxsize=1)(self._read_feature_service)
        self._direct_read: Any = None
        self._read_path: dict[str, str] | None = None

    # -- configuration -----------------------------------------------------------------

    def source_path(self, name: str) -> Path:
        """The parquet file Feast reads for a source (CSV sources are staged as parquet)."""
        source = self.sources[name]
        if source.format == "parquet":
            return self.project_dir / source.path
        return self.state_dir / "sources" / f"{name}.parquet"

    def stage_sources(self) -> None:
        """Convert CSV sources to parquet under state_dir/sources when the CSV is newer (Feast
        reads only parquet), read with ingest's dtype contract. Parquet sources are read in
        place."""
        for name, source in sorted(self.sources.items()):
            if source.format != "csv":
                continue
            csv_file, staged = self.project_dir / source.path, self.source_path(name)
            if staged.exists() and staged.stat().st_mtime >= csv_file.stat().st_mtime:
                continue
            # read as ingest reads it (one dtype contract, mlstack.runtime.dtypes: an int
            # column with a null is refused here too, naming source, file, column and rows)
            spec = SourceSpec(name=name, path=source.path, format="csv", timestamp_field="",
                              columns=dict(source.columns))
            frame = read_source(spec, self.project_dir)
            frame = frame[[c for c in frame.columns if c in source.columns]]
            staged.parent.mkdir(parents=True, exist_ok=True)
            tmp = staged.with_suffix(".tmp")
            frame.to_parquet(tmp, index=False)
            tmp.replace(staged)

    def config_dict(self) -> dict[str, Any]:
        """feature_store.yaml, parsed, with its ${VARIABLES} filled in (${MLSTACK_STATE_DIR}
        from state_dir, the others from the environment)."""
        import yaml

        raw = yaml.safe_load((self.repo_dir / "feature_store.yaml").read_text(encoding="utf-8"))
        config: dict[str, Any] = expand_variables(
            raw, {STATE_DIR_VARIABLE: self.state_dir.as_posix()}, self.variable_defaults)
        return config

    def repo_config(self) -> RepoConfig:
        """The Feast RepoConfig of feature_store.yaml, variables filled in."""
        from feast import RepoConfig

        _quiet_file_registry_advice()
        return RepoConfig(repo_path=self.repo_dir, **self.config_dict())

    def _open_store(self) -> FeatureStore:
        from feast import FeatureStore

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._direct_read = self._read_path = None  # a new store: prepared and checked again
        return FeatureStore(repo_path=str(self.repo_dir), config=self.repo_config())

    def _read_feature_service(self) -> FeatureService:
        return self.get_store().get_feature_service(self.feature_service_name)

    # -- registry ----------------------------------------------------------------------

    def repo_objects(self) -> list[Any]:
        """The Feast objects repo_dir/repo.py defines, sorted by type and name."""
        from feast import Entity, FeatureService, FeatureView
        from feast.data_source import DataSource
        from feast.on_demand_feature_view import OnDemandFeatureView

        spec = importlib.util.spec_from_file_location(self.repo_module, self.repo_dir / "repo.py")
        if spec is None or spec.loader is None:  # a .py path always has both
            raise ImportError(f"cannot import {self.repo_dir / 'repo.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.repo_module] = module  # the on-demand view's source is read back
        spec.loader.exec_module(module)
        kinds: tuple[type[Any], ...] = (DataSource, Entity, FeatureView, OnDemandFeatureView,
                                         FeatureService)
        found: dict[tuple[int, str], Any] = {}
        for value in vars(module).values():
            for order, kind in enumerate(kinds):
                if isinstance(value, kind):
                    found[(order, value.name)] = value
        return [found[key] for key in sorted(found)]

    def apply(self) -> None:
        """Register the repo's objects and delete registered ones it no longer defines."""
        store = self.get_store()
        objects = self.repo_objects()
        wanted = {(type(o).__name__, o.name) for o in objects}
        registered: list[Any] = [
            *store.list_data_sources(),
            *store.list_entities(),
            *store.list_feature_views(),
            *store.list_on_demand_feature_views(),
            *store.list_feature_services(),
        ]
        stale = [o for o in registered if (type(o).__name__, o.name) not in wanted]
        store.apply(objects, objects_to_delete=stale, partial=False)
        self.feature_service.cache_clear()

    def online_views(self) -> list[str]:
        """The registered feature views served online, by name."""
        return sorted(v.name for v in self.get_store().list_feature_views() if v.online)

    def materialize(self, end: datetime | None = None,
                    views: Sequence[str] | None = None) -> None:
        """Load the online store with the latest values up to `end` (default: now), for the
        online feature views named in `views` (default: all). Views never materialized load
        all history; the others continue from their last run."""
        self.stage_sources()
        store = self.get_store()
        end = end or datetime.now(UTC)
        online = [v for v in store.list_feature_views()
                  if v.online and (views is None or v.name in views)]
        history = _read_history(self.state_dir / HISTORY_FILE)
        counts = {v.name: _rows_up_to(v, v.most_recent_end_time) for v in online}
        rewritten = {v.name for v in online if v.materialization_intervals
                     and _history_rewritten(history.get(v.name), counts[v.name])}
        fresh = sorted(v.name for v in online
                       if not v.materialization_intervals or v.name in rewritten)
        seen = sorted(v.name for v in online
                      if v.materialization_intervals and v.name not in rewritten)
        if fresh:
            store.materialize(start_date=EPOCH, end_date=end, feature_views=fresh)
        if seen and getattr(store.config.offline_store, "type", "") == "ray":
            # Feast's Ray compute engine fails on an interval without rows (its dataset has
            # no schema): a view whose source has nothing newer than its last run is skipped
            by_name = {v.name: v for v in online}
            seen = [name for name in seen if _rows_after(by_name[name])]
        if seen:
            store.materialize_incremental(end_date=end, feature_views=seen)
        # what each view's source held up to this run's end: the next run compares
        write_json(self.state_dir / HISTORY_FILE, {
            v.name: {"end": end.isoformat(), "rows": _rows_up_to(v, end)} for v in online})

    # -- reading features --------------------------------------------------------------

    def online_read_path(self) -> dict[str, str]:
        """How online features are read: {"path": "direct" or "feast", "reason": ...}. The
        direct read is prepared once and used only after it answered exactly what Feast
        answers for up to ONLINE_READ_CHECK_KEYS stored keys and one unknown key."""
        if self._read_path is None:
            self._read_path = self._prepare_direct_read()
        return self._read_path

    def _prepare_direct_read(self) -> dict[str, str]:
        from mlstack.runtime.online_read import SqliteOnlineRead

        if os.environ.get(ONLINE_READ_ENV, "auto") == "feast":
            return {"path": "feast", "reason": f"{ONLINE_READ_ENV}=feast"}
        read = SqliteOnlineRead.prepare(self.get_store(), self.feature_service(),
                                        self.request_keys)
        if read is None:
            return {"path": "feast", "reason": "the online store is not SQLite, or the "
                    "feature service has views or projections only Feast computes"}
        keys = read.sample_keys(ONLINE_READ_CHECK_KEYS)
        unknown = tuple(-1 if isinstance(v, int) else f"{v}\x00unknown" for v in keys[0]) \
            if keys else None
        checked = [*keys, *([unknown] if unknown is not None else [])]
        if not keys:
            return {"path": "feast", "reason": "no stored key to check the direct read on"}
        direct, feast = read(checked), self._feast_read(checked, with_times=True)
        if direct != feast:
            return {"path": "feast", "reason": "the direct read of the SQLite online store "
                    f"differed from Feast's get_online_features on {len(checked)} keys"}
        self._direct_read = read
        return {"path": "direct", "reason": "the direct read of the SQLite online store "
                f"answered as Feast's get_online_features on {len(checked)} keys"}

    def _read_online(self, unique: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
        """Feast's answer for distinct key tuples: key columns, fetched columns and (for
        views with a TTL) their event times ('column__ts', seconds); read directly from the
        online store where that was checked to answer the same (online_read_path)."""
        if self._read_path is None:
            self.online_read_path()
        if self._direct_read is not None:
            direct: dict[str, list[Any]] = self._direct_read(unique)
            return direct
        return self._feast_read(unique, with_times=bool(self._column_ttl))

    def _feast_read(self, unique: list[tuple[Any, ...]], *, with_times: bool,
                    ) -> dict[str, list[Any]]:
        keys = self.request_keys
        response = self.get_store().get_online_features(
            features=self.feature_service(),
            entity_rows={k: [key[i] for key in unique] for i, k in enumerate(keys)},
            full_feature_names=True,
        )
        return response.to_dict(include_event_timestamps=with_times)

    def online_rows(self, keys: Sequence[tuple[Any, ...]]) -> OnlineRows:
        """Online features of each key tuple (values of `request_keys`, in that order): the
        service's input path. Each distinct key is read once; a key is found when every
        fetched value is present and no view's value is older than its TTL."""
        dtypes = self.fetch_dtypes
        if not keys:
            return OnlineRows(np.zeros(0, dtype=bool), {
                c: np.empty(0, dtype=NUMPY_DTYPES.get(d, object)) for c, d in dtypes.items()})
        unique = list(dict.fromkeys(keys))
        data = self._read_online(unique)
        # joined on the keys Feast returns, not on its order
        returned = zip(*(data[k] for k in self.request_keys), strict=True)
        row_of = {key: i for i, key in enumerate(returned)}
        stale_before = self.clock()
        usable = []
        for i in range(len(unique)):
            ok = all(data[c][i] is not None for c in dtypes)
            for column, ttl in self._column_ttl.items():
                if not ok:
                    break
                seconds = data[column + _TS_SUFFIX][i]
                ok = bool(seconds) and stale_before - seconds <= ttl
            usable.append(ok)
        positions = [row_of.get(key) for key in keys]
        found = np.fromiter((p is not None and usable[p] for p in positions), dtype=bool,
                            count=len(keys))
        rows = [p for p, ok in zip(positions, found, strict=True) if ok and p is not None]
        columns = {c: np.array([data[c][p] for p in rows], dtype=NUMPY_DTYPES.get(d, object))
                   for c, d in dtypes.items()}
        return OnlineRows(found, columns)

    def online_features(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """The request rows with the model's fetched features ('view__field') joined on the
        entity keys, in request order; entities the store does not know, or whose values are
        older than their view's TTL, get nulls."""
        keys = self.request_keys
        got = self.online_rows([tuple(row[k] for k in keys) for row in rows])
        positions = np.flatnonzero(got.found).tolist()
        columns: dict[str, list[Any]] = {}
        for column, values in got.columns.items():
            full: list[Any] = [None] * len(rows)
            for position, value in zip(positions, values.tolist(), strict=True):
                full[position] = value
            columns[column] = full
        return pd.DataFrame(rows, columns=None if rows else list(keys)).assign(**columns)

    def historical_features(
        self, entity_df: pd.DataFrame, timestamp_column: str | None = None
    ) -> pd.DataFrame:
        """Point-in-time features: for each entity row, the latest source row at or before its
        timestamp (`timestamp_column`, default the object's) and within the view's TTL (else
        nulls). Rows keep their order, index and columns; the features are added."""
        timestamp_column = timestamp_column or self.timestamp_column
        self.stage_sources()
        keys = list(self.request_keys)
        frame = entity_df.copy()
        # any precision in; microseconds to the offline store (a nanosecond timestamp made
        # Arrow refuse the cast); the same floored value joins the result back
        frame[_TS] = (
            pd.to_datetime(frame[timestamp_column], utc=True)
            .astype("datetime64[ns, UTC]")
            .dt.floor("us")
        )
        query = frame[keys + [_TS]].drop_duplicates().reset_index(drop=True)
        query[_QUERY_ROW] = np.arange(len(query))
        result = (
            self.get_store()
            .get_historical_features(
                entity_df=query.rename(columns={_TS: "event_timestamp"}),
                features=self.feature_service(),
                full_feature_names=True,
            )
            .to_df()
        )
        # back by the query's own row: no store keeps the row order, and Feast's Ray offline
        # store answers with the timestamp cut to whole seconds
        result = query.merge(
            result[[_QUERY_ROW, *self.fetch_columns]], on=_QUERY_ROW, how="left",
            validate="one_to_one",
        ).drop(columns=[_QUERY_ROW])
        joined = frame.merge(result, on=keys + [_TS], how="left", validate="many_to_one")
        return joined.drop(columns=[_TS]).set_axis(entity_df.index)


class _FileRegistryAdvice(logging.Filter):
    """Feast 0.67 advises, at every config load, that serve_features_while_materializing
    "typically has no effect" on a file registry; its file registry reads the flag all the
    same (feast/infra/registry/registry.py) and serves MATERIALIZING views with it, which a
    local deploy needs while a scheduled materialize runs. The advice is dropped, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("`serve_features_while_materializing` is enabled but")
                    and "'file'" in message)


@functools.cache
def _quiet_file_registry_advice() -> None:
    logging.getLogger("feast.repo_config").addFilter(_FileRegistryAdvice())
