"""The bad-spec corpus: each file in tests/bad_specs/ holds one mistake and says, in its first
line, the code and line:col of the first diagnostic mlstack must report:

    # expect: MLS101 5:1            (an error: lint exits 1)
    # expect: MLS403 24:12 --strict (a warning: lint exits 1 only with --strict)

A few cases cannot carry a comment (a 1 MB file, a UTF-16 file); they are built here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.cli.main import main
from mlstack.diagnostics.codes import CODES
from mlstack.frontend.analysis import analyze_spec
from mlstack.frontend.loader import MAX_BYTES

CORPUS = Path(__file__).parent / "bad_specs"
EXPECT_RE = re.compile(r"^# expect: (MLS\d{3}) (\d+):(\d+)( --strict)?\s*$")
BASE = (CORPUS / "schema_unknown_top_key.yaml").read_text().replace("metadatta:", "metadata:")


def _expectation(path: Path) -> tuple[str, int, int, bool]:
    first = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n", 1)[0]
    match = EXPECT_RE.match(first.decode("utf-8", errors="replace"))
    assert match, f"{path.name}: first line must be '# expect: MLSnnn LINE:COL [--strict]'"
    return match.group(1), int(match.group(2)), int(match.group(3)), bool(match.group(4))


def _generated_cases(tmp: Path) -> dict[str, tuple[Path, tuple[str, int, int, bool]]]:
    huge = tmp / "huge.yaml"
    huge.write_text(BASE + "# padding\n" * (MAX_BYTES // 10 + 1))
    utf16 = tmp / "utf16.yaml"
    utf16.write_bytes(BASE.encode("utf-16"))
    return {"generated_huge_file": (huge, ("MLS009", 1, 1, False)),
            "generated_utf16": (utf16, ("MLS002", 1, 1, False))}


FILES = sorted(CORPUS.glob("*.yaml"))
# Codes lint reports about a path, not inside a spec, so no bad spec can carry them; each is
# proven reachable by the test named.
PATH_CODES = {"MLS012": "tests/test_lint_paths.py::test_a_missing_path_is_one_finding_among_the_others"}
# Codes only `lint --data` reports (they need data files beside the spec); each is proven
# reachable by the test named.
DATA_CODES = {"MLS216": "tests/test_lint_data.py::test_a_parquet_type_mismatch_is_found_at_the_"
                        "column_line"}
CASES = [pytest.param(p, _expectation(p), id=p.stem) for p in FILES]


def test_corpus_is_large_and_covers_every_code(tmp_path):
    assert len(FILES) >= 45
    first_codes = {_expectation(p)[0] for p in FILES}
    first_codes |= {e[0] for _, e in _generated_cases(tmp_path).values()}
    first_codes |= set(PATH_CODES) | set(DATA_CODES)
    assert sorted(set(CODES) - first_codes) == [], "codes no bad spec makes mlstack report"
    assert first_codes <= set(CODES), "the corpus expects codes mlstack does not define"


def _check_first_diagnostic(path: Path, expected, capsys) -> None:
    code, line, col, strict = expected
    analysis = analyze_spec(path)
    assert analysis.diagnostics, f"{path.name}: no diagnostic"
    first = analysis.diagnostics[0]
    assert (first.code, first.location.line, first.location.column) == (code, line, col), (
        f"{path.name}: first diagnostic is {first.location}: {first.code} {first.message}")
    assert first.message and first.location.file
    assert (first.severity.value == "warning") == strict
    if strict:  # a warning alone passes lint; --strict makes it fail
        assert main(["lint", str(path)]) == 0
    argv = ["lint", str(path)] + (["--strict"] if strict else [])
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert f":{line}:{col}: " in out and code in out


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_bad_spec_reports_its_first_diagnostic(path, expected, capsys):
    _check_first_diagnostic(path, expected, capsys)


@pytest.mark.parametrize("name", ["generated_huge_file", "generated_utf16"])
def test_generated_bad_spec_reports_its_first_diagnostic(name, tmp_path, capsys):
    path, expected = _generated_cases(tmp_path)[name]
    _check_first_diagnostic(path, expected, capsys)


SUBPROCESS_CASES = ["load_billion_laughs", "load_not_utf8", "schema_unknown_top_key",
                    "schema_expr_import", "ref_unknown_entity", "slo_ttl_shorter_than_freshness"]


@pytest.mark.parametrize("stem", SUBPROCESS_CASES)
def test_bad_spec_through_the_installed_command(stem):
    """The same contract through a real process: exit 1, the located code, no traceback."""
    path = CORPUS / f"{stem}.yaml"
    code, line, col, strict = _expectation(path)
    argv = [sys.executable, "-m", "mlstack", "lint", str(path)] + (["--strict"] if strict else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    assert f":{line}:{col}: " in first and code in first, first


def test_every_location_points_inside_the_file():
    """Every diagnostic of every case (not just the first) points at a real line and column."""
    for path in FILES:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines() or [""]
        for d in analyze_spec(path).diagnostics:
            assert d.code in CODES, (path.name, d.code)
            assert 1 <= d.location.line <= len(lines), (path.name, d)
            assert 1 <= d.location.column <= len(lines[d.location.line - 1]) + 1, (path.name, d)
            assert "Input should" not in d.message and "pydantic" not in d.message.lower(), d
