"""Every blueprint ships the data its spec declares, and its make_data.py regenerates it exactly.

The data checks read the files with pandas (the runtime extra); without it they are skipped.
"""

import importlib.util
from datetime import timedelta

import pytest

from mlstack.frontend.analysis import analyze_spec
from tests.conftest import BLUEPRINTS

SPECS = sorted(BLUEPRINTS.glob("*/mlstack.yaml"))
MAX_DATA_BYTES = 300_000  # blueprints travel in the wheel and in `mlstack init`


def _name(spec) -> str:
    return spec.parent.name


def _system(spec):
    system = analyze_spec(spec).system
    assert system is not None, f"{spec} does not resolve"
    return system


def _file_sources(spec):
    return [(spec, src) for src in _system(spec).sources if src.family == "file"]


FILE_SOURCES = [pair for spec in SPECS for pair in _file_sources(spec)]


@pytest.fixture
def pd():
    return pytest.importorskip("pandas")


def _read(pd, spec, src):
    path = spec.parent / src.path
    if src.kind == "parquet":
        return pd.read_parquet(path)
    stamps = [c.name for c in src.columns if c.dtype == "timestamp"]
    return pd.read_csv(path, parse_dates=stamps)


def _dtype_fits(pd, declared: str, series) -> bool:
    if declared == "timestamp":
        return isinstance(series.dtype, pd.DatetimeTZDtype) and str(series.dtype.tz) == "UTC"
    if declared == "string":
        return pd.api.types.is_string_dtype(series.dtype)
    return str(series.dtype) == declared


@pytest.mark.parametrize("spec", SPECS, ids=_name)
def test_declared_data_files_exist_and_stay_small(spec):
    data = spec.parent / "data"
    for _, src in _file_sources(spec):
        assert (spec.parent / src.path).is_file(), f"{src.name}: {src.path} is missing"
    size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    assert size < MAX_DATA_BYTES, f"{_name(spec)} ships {size} bytes of data"


@pytest.mark.parametrize(("spec", "src"), FILE_SOURCES,
                         ids=[f"{_name(s)}-{src.name}" for s, src in FILE_SOURCES])
def test_data_has_the_declared_columns_and_dtypes(pd, spec, src):
    frame = _read(pd, spec, src)
    declared = {c.name: c.dtype for c in src.columns}
    assert sorted(frame.columns) == sorted(declared)
    wrong = {name: (dtype, str(frame[name].dtype)) for name, dtype in declared.items()
             if not _dtype_fits(pd, dtype, frame[name])}
    assert wrong == {}, "declared dtype vs dtype in the file"
    assert len(frame) > 0


@pytest.mark.parametrize("spec", SPECS, ids=_name)
def test_every_label_row_has_features_within_ttl(pd, spec):
    """The point-in-time join finds, for each label row and each view the model reads, a
    feature row at or before the label's time and no older than the view's TTL."""
    system = _system(spec)
    sources = {s.name: s for s in system.sources}
    label_src = sources[system.label.source]
    labels = _read(pd, spec, label_src).rename(columns={label_src.timestamp_field: "_at"})
    labels["_at"] = labels["_at"].astype("datetime64[ns, UTC]")  # merge_asof wants one unit
    for name in system.model.feature_views:
        view = system.view(name)
        src = sources[view.source]
        keys = [k.name for k in view.join_keys]
        rows = _read(pd, spec, src)[keys + [src.timestamp_field]].rename(
            columns={src.timestamp_field: "_feature_at"})
        rows["_feature_at"] = rows["_feature_at"].astype("datetime64[ns, UTC]")
        joined = pd.merge_asof(
            labels[keys + ["_at"]].sort_values("_at"), rows.sort_values("_feature_at"),
            left_on="_at", right_on="_feature_at", by=keys, direction="backward",
            tolerance=pd.Timedelta(timedelta(seconds=view.ttl_seconds)))
        missing = int(joined["_feature_at"].isna().sum())
        assert missing == 0, f"{missing} label rows have no '{name}' row within its ttl"


def _load_make_data(spec):
    module_spec = importlib.util.spec_from_file_location(
        f"make_data_{_name(spec).replace('-', '_')}", spec.parent / "make_data.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("spec", [s for s in SPECS if (s.parent / "make_data.py").is_file()],
                         ids=_name)
def test_make_data_regenerates_identical_bytes(pd, spec, tmp_path):
    pytest.importorskip("pyarrow")
    _load_make_data(spec).main(tmp_path / "data")
    shipped = spec.parent / "data"
    made = sorted(p.relative_to(tmp_path / "data") for p in (tmp_path / "data").rglob("*")
                  if p.is_file())
    assert made == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    for rel in made:
        assert (tmp_path / "data" / rel).read_bytes() == (shipped / rel).read_bytes(), rel
