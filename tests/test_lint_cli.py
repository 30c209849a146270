"""`mlstack lint` on the command line: exit codes, --strict, several files, folders, help.
Folder search, globs and missing paths in depth: tests/test_lint_paths.py."""

from __future__ import annotations

import pytest

from mlstack.cli.commands import VERBS
from mlstack.cli.main import build_parser, main
from tests.conftest import BLUEPRINTS
from tests.test_lint_corpus import CORPUS

WARNING_ONLY = CORPUS / "slo_ttl_shorter_than_freshness.yaml"
ERROR = CORPUS / "ref_unknown_entity.yaml"
CLEAN = BLUEPRINTS / "churn" / "mlstack.yaml"


def test_warnings_pass_unless_strict(capsys):
    assert main(["lint", str(WARNING_ONLY)]) == 0
    out = capsys.readouterr().out
    assert "warning: MLS403" in out and "0 error(s), 1 warning(s) in 1 file" in out
    assert main(["lint", "--strict", str(WARNING_ONLY)]) == 1
    assert "warning: MLS403" in capsys.readouterr().out


def test_strict_on_a_clean_spec_passes(capsys):
    assert main(["lint", "--strict", str(CLEAN)]) == 0
    assert capsys.readouterr().out == "1 file clean\n"


def test_several_files_report_together(capsys):
    assert main(["lint", str(CLEAN), str(ERROR), str(WARNING_ONLY)]) == 1
    out = capsys.readouterr().out
    assert "error: MLS201" in out and "warning: MLS403" in out
    assert out.rstrip().endswith("1 error(s), 1 warning(s) in 3 files")


def test_a_project_folder_lints_its_spec(capsys):
    assert main(["lint", str(CLEAN.parent)]) == 0
    assert "clean" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["lint", "--format", "xml", "x.yaml"], ["lint", "--strct"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err.startswith("usage: mlstack")


def test_an_unknown_format_suggests_the_closest(capsys):
    assert main(["lint", "--format", "sarf", "x.yaml"]) == 2
    assert "did you mean 'sarif'?" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["lint", "no/such/spec.yaml"], ["lint", str(CORPUS)]])
def test_a_path_with_no_spec_is_a_finding_and_exits_2(argv, capsys):
    """I/O errors still exit 2, but as a finding (MLS012) in lint's own output."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "error: MLS012" in out and out.rstrip().endswith("1 error(s), 0 warning(s) in 1 file")


def test_lint_without_paths_lints_the_current_folder_and_below(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["lint"]) == 2
    assert "MLS012 no mlstack.yaml in the current folder or below" in capsys.readouterr().out
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mlstack.yaml").write_text(CLEAN.read_text())
    assert main(["lint"]) == 0
    assert capsys.readouterr().out == "1 file clean\n"


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert f"usage: mlstack {verb}" in capsys.readouterr().out


def test_version(capsys):
    from mlstack import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mlstack {__version__}"


def test_lint_formats_are_the_documented_ones():
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    lint = sub.choices["lint"]
    fmt = next(a for a in lint._actions if a.dest == "format")
    assert fmt.choices == ("text", "json", "sarif", "github") and fmt.default == "text"
