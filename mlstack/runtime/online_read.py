"""A prepared read of Feast's SQLite online store: the service's lookup without Feast's
per-call machinery (issue 20: 0.19 ms per Feast lookup, most of it registry walks, protobuf
responses and type conversion around one SELECT).

Feast stays the writer and the source of truth. This reads the rows Feast's SqliteOnlineStore
wrote, with Feast's own entity key serialization (`serialize_entity_key`) and value decoding
(`ValueProto`), and answers what `OnlineResponse.to_dict(include_event_timestamps=True)` with
full feature names answers for the same keys: the key columns (with a zero time, 'key__ts'),
one list per 'view__feature' and its event time in seconds ('view__feature__ts'; 0 for a key
without a row).

    read = SqliteOnlineRead.prepare(feast_store, feature_service, request_keys)
    read(unique_keys)           -> {"customer_id": [...], "view__f": [...], "view__f__ts": [...]}

`prepare` returns None for what it does not cover (an online store other than SQLite, on-demand
views, aliased projections, a join key the request does not carry): the caller uses Feast.
One SELECT per feature view per call, for all the call's keys (a batch shares its lookup).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["SqliteOnlineRead"]

# ValueProto fields read as they are (Feast's python type is the field's own)
_SCALARS = frozenset({"int32_val", "int64_val", "float_val", "double_val", "string_val",
                      "bool_val", "bytes_val"})


def _seconds(stamp: Any) -> int:
    """An event_ts cell as Feast's answer gives it: whole seconds since the epoch (Feast
    stores integer seconds; older stores hold ISO text, naive meaning UTC)."""
    if isinstance(stamp, int | float):
        return int(stamp)
    if stamp is None:
        return 0
    moment = datetime.fromisoformat(stamp.decode() if isinstance(stamp, bytes) else stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class _View:
    """One feature view's part of the read: its table, join keys and features."""

    def __init__(self, table: str, join_keys: list[tuple[str, int, Any]],
                 features: dict[str, str]) -> None:
        self.table = table
        # (join key, position in the request keys, feast ValueType) in Feast's order
        self.join_keys = join_keys
        self.features = features  # stored feature name -> 'view__feature'


class SqliteOnlineRead:
    """See the module docstring. Thread-safe: one SQLite connection per thread."""

    def __init__(self, db_path: str, views: list[_View], request_keys: Sequence[str],
                 key_version: int) -> None:
        self.db_path = db_path
        self.views = views
        self.request_keys = tuple(request_keys)
        self.key_version = key_version
        self._local = threading.local()
        self.columns = [c for v in views for c in v.features.values()]

    @classmethod
    def prepare(cls, store: Any, feature_service: Any,
                request_keys: Sequence[str]) -> SqliteOnlineRead | None:
        """The read for `feature_service` of a feast.FeatureStore, or None where it would not
        answer what Feast answers (the caller reads through Feast)."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id

        config = getattr(store, "config", None)
        if config is None or getattr(getattr(config, "online_store", None), "type",
                                     None) != "sqlite":
            return None
        if feature_service.feature_view_projections is None:
            return None
        versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning",
                                  False))
        views = []
        for projection in feature_service.feature_view_projections:
            if projection.name_alias or projection.join_key_map:
                return None
            try:
                view = store.get_feature_view(projection.name)
            except Exception:  # an on-demand or stream view: Feast computes those
                return None
            join_keys = []
            for column in sorted(view.entity_columns, key=lambda f: f.name):
                if column.name not in request_keys:
                    return None
                join_keys.append((column.name, list(request_keys).index(column.name),
                                  column.dtype.to_value_type()))
            features = {f.name: f"{projection.name}__{f.name}" for f in projection.features}
            views.append(_View(_table_id(config.project, view, versioning), join_keys,
                               features))
        if not views:
            return None
        return cls(SqliteOnlineStore._get_db_path(config), views, request_keys,
                   config.entity_key_serialization_version)

    def sample_keys(self, count: int) -> list[tuple[Any, ...]]:
        """Up to `count` key tuples the table of the first view keyed by all the request keys
        holds (by Feast's own `deserialize_entity_key`), for checking this read against Feast;
        none when no view is (a ranking model's first view is often keyed by the document
        alone, its query-document view by both)."""
        from feast.infra.key_encoding_utils import deserialize_entity_key
        from feast.type_map import feast_value_type_to_python_type

        view = next((v for v in self.views if len(v.join_keys) == len(self.request_keys)),
                    None)
        if view is None:
            return []
        blobs = self._connection().execute(
            f'SELECT DISTINCT entity_key FROM "{view.table}" ORDER BY entity_key LIMIT ?',
            (count,)).fetchall()
        keys = []
        for (blob,) in blobs:
            key = deserialize_entity_key(blob, entity_key_serialization_version=self.key_version)
            values = dict(zip(key.join_keys, key.entity_values, strict=True))
            keys.append(tuple(feast_value_type_to_python_type(values[k])
                              for k in self.request_keys))
        return keys

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, check_same_thread=True)
            self._local.conn = conn
        return conn

    def _serialized(self, view: _View, keys: Sequence[tuple[Any, ...]]) -> list[bytes]:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        names = [name for name, _, _ in view.join_keys]
        values = [python_values_to_proto_values([key[i] for key in keys], value_type)
                  for _, i, value_type in view.join_keys]
        return [serialize_entity_key(EntityKey(join_keys=names,
                                               entity_values=[v[row] for v in values]),
                                     entity_key_serialization_version=self.key_version)
                for row in range(len(keys))]

    def __call__(self, keys: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
        """Feast's answer for key tuples (values of the request keys, in order)."""
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        out: dict[str, list[Any]] = {}
        for i, k in enumerate(self.request_keys):  # Feast answers keys with a zero time
            out[k], out[k + "__ts"] = [key[i] for key in keys], [0] * len(keys)
        conn = self._connection()
        for view in self.views:
            serialized = self._serialized(view, keys)
            rows_of: dict[bytes, list[int]] = {}
            for i, key_bytes in enumerate(serialized):
                rows_of.setdefault(key_bytes, []).append(i)
            values = {c: [None] * len(keys) for c in view.features.values()}
            stamps = {c: [0] * len(keys) for c in view.features.values()}
            rows = conn.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{view.table}" '
                f'WHERE entity_key IN ({",".join("?" * len(serialized))})',
                serialized).fetchall()
            for entity_key, name, blob, stamp in rows:
                column = view.features.get(name)
                if column is None:
                    continue
                value = Value()
                value.ParseFromString(blob)
                kind = value.WhichOneof("val")
                if kind in _SCALARS:
                    got = getattr(value, kind)
                elif kind is not None and kind != "null_val":
                    got = feast_value_type_to_python_type(value)
                else:
                    got = None
                seconds = _seconds(stamp)
                for row in rows_of[entity_key]:
                    values[column][row], stamps[column][row] = got, seconds
            for column in view.features.values():
                out[column] = values[column]
                out[column + "__ts"] = stamps[column]
        return out
