"""`mlstack lint --data`: the file sources' data against their declared columns, from the files'
schemas, as MLS216 at the declared column's line in every output format."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from mlstack.cli.main import main
from tests.conftest import BLUEPRINTS

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SPEC = """\
apiVersion: mlstack/v1
kind: System
metadata: {name: shop}
sources:
  - name: orders
    kind: KIND
    path: data/orders.EXT
    timestamp_field: ts
    columns:
      id: int64
      ts: timestamp
      amount: AMOUNT
entities:
  - {name: order, join_keys: [id]}
features:
  views:
    - name: order_stats
      entity: order
      source: orders
      ttl: 30d
      fields: [amount]
label: {source: orders, field: amount}
model:
  task: regression
  algorithm: gradient_boosting
  features: [order_stats.amount]
evaluation:
  metrics: [rmse]
"""


def _project(tmp_path, kind: str, amount: str, write=True) -> str:
    ext = "parquet" if kind == "parquet" else "csv"
    spec = tmp_path / "mlstack.yaml"
    spec.write_text(SPEC.replace("KIND", kind).replace("EXT", ext).replace("AMOUNT", amount))
    (tmp_path / "data").mkdir()
    if write and kind == "parquet":
        pq.write_table(pa.table({"id": pa.array([1, 2, 3]),
                                 "ts": pa.array([0, 1, 2], pa.timestamp("s", tz="UTC")),
                                 "amount": pa.array([1.5, None, 29.25])}),
                       tmp_path / "data/orders.parquet")
    elif write:
        (tmp_path / "data/orders.csv").write_text(
            "id,ts,amount\n1,2026-01-01T00:00:00Z,1.5\n2,2026-01-02T00:00:00Z,abc\n"
            "3,2026-01-03T00:00:00Z,2\n")
    return str(spec)


def _lint(capsys, *args) -> tuple[int, str]:
    code = main(["lint", *args])
    return code, capsys.readouterr().out


def test_the_declared_data_lints_clean_and_without_data_is_not_read(tmp_path, capsys):
    spec = _project(tmp_path, "parquet", "float64")
    assert _lint(capsys, "--data", spec) == (0, "1 file clean\n")


def test_a_parquet_type_mismatch_is_found_at_the_column_line(tmp_path, capsys):
    spec = _project(tmp_path, "parquet", "int64")
    assert _lint(capsys, spec)[0] == 0  # without --data lint reads no data
    code, out = _lint(capsys, "--data", spec)
    assert code == 1
    assert out.splitlines()[0] == (
        f"{spec}:12:7: error: MLS216 source 'orders', file data/orders.parquet, column "
        "'amount': declared int64, found float64, values from 1.5 to 29.25")


def test_nulls_in_an_int_column_are_found_from_the_footer(tmp_path, capsys):
    spec = _project(tmp_path, "parquet", "float64")
    pq.write_table(pa.table({"id": pa.array([1, None, 3]), "ts": pa.array(
        [0, 1, 2], pa.timestamp("s", tz="UTC")), "amount": pa.array([1.5, 2.0, 3.0])}),
        tmp_path / "data/orders.parquet")
    code, out = _lint(capsys, "--data", spec)
    assert code == 1 and (":10:7: error: MLS216 source 'orders', file data/orders.parquet, "
                          "column 'id': declared int64, found 1 nulls; a int64 column holds "
                          "no nulls") in out


def test_a_csv_sample_mismatch_quotes_the_values_that_do_not_fit(tmp_path, capsys):
    spec = _project(tmp_path, "csv", "float64")
    code, out = _lint(capsys, "--data", "--format", "json", spec)
    assert code == 1
    [diag] = json.loads(out)["diagnostics"]
    assert (diag["code"], diag["line"], diag["column"], diag["pointer"]) == (
        "MLS216", 12, 7, "/sources/0/columns/amount")
    assert diag["message"] == ("source 'orders', file data/orders.csv, column 'amount': "
                               "declared float64, found string, e.g. 'abc'")


def test_a_missing_file_and_a_missing_column_are_found(tmp_path, capsys):
    spec = _project(tmp_path, "parquet", "float64", write=False)
    code, out = _lint(capsys, "--data", "--format", "github", spec)
    assert code == 1
    assert out.startswith(f"::error file={spec},line=7,col=11,title=MLS216::source 'orders', "
                          "file data/orders.parquet does not exist")
    pq.write_table(pa.table({"id": pa.array([1]), "ts": pa.array([0], pa.timestamp("s"))}),
                   tmp_path / "data/orders.parquet")
    code, out = _lint(capsys, "--data", "--format", "sarif", spec)
    [result] = json.loads(out)["runs"][0]["results"]
    assert result["ruleId"] == "MLS216"
    assert result["locations"][0]["physicalLocation"]["region"] == {"startLine": 12,
                                                                    "startColumn": 7}
    assert "column 'amount' is declared but the file has no such column" in \
        result["message"]["text"]


def test_every_blueprint_lints_clean_with_its_data(tmp_path, capsys):
    for spec in sorted(BLUEPRINTS.glob("*/mlstack.yaml")):
        assert _lint(capsys, "--data", str(spec)) == (0, "1 file clean\n"), spec


def test_the_issue_example_a_float_column_declared_int64(tmp_path, capsys):
    shutil.copytree(BLUEPRINTS / "churn", tmp_path / "churn")
    spec = tmp_path / "churn/mlstack.yaml"
    spec.write_text(spec.read_text().replace("monthly_charges: float64",
                                             "monthly_charges: int64"))
    code, out = _lint(capsys, "--data", str(spec))
    assert code == 1 and "column 'monthly_charges': declared int64, found float64" in out


def test_without_pyarrow_data_is_a_usage_error_naming_the_extra(tmp_path, capsys,
                                                                monkeypatch):
    spec = _project(tmp_path, "parquet", "float64")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["lint", "--data", spec]) == 2
    err = capsys.readouterr().err
    assert "lint --data needs the 'runtime' extra of mlstack" in err
    assert "pip install 'mlstack[runtime]'" in err
