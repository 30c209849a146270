"""Lint for CI and monorepos: folders searched at any depth (what .gitignore excludes, build/,
.mlstack/, node_modules/ and virtual environments skipped), glob patterns, a path that names
no spec as one finding (MLS012) among the others in every format, and SARIF rules that link
to their section of docs/diagnostics.md."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from mlstack.cli.main import main
from mlstack.diagnostics.codes import CODES
from mlstack.diagnostics.diagnostic import Diagnostic, Location, Severity
from mlstack.diagnostics.formats import DIAGNOSTICS_DOC, help_uri, render_sarif
from mlstack.frontend.discover import Missing, find_specs
from tests.conftest import BLUEPRINTS, REPO
from tests.test_lint_corpus import CORPUS
from tests.test_sarif import ANNOTATION_RE, assert_sarif_2_1_0

CLEAN = (BLUEPRINTS / "churn" / "mlstack.yaml").read_text()
WARNING = (CORPUS / "slo_ttl_shorter_than_freshness.yaml").read_text()
BROKEN = (CORPUS / "ref_unknown_entity.yaml").read_text()
NEVER_SEARCHED = ("node_modules/pkg/mlstack.yaml", "a/build/mlstack.yaml",
                  "a/.mlstack/versions/v1/mlstack.yaml", ".venv/lib/mlstack.yaml",
                  "env/mlstack.yaml")


def _tree(root, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def projects(tmp_path, monkeypatch):
    """Specs at several depths, and specs where the search must not go (a venv is any folder
    holding pyvenv.cfg). Not a git repository: the folders are walked."""
    _tree(tmp_path, {"a/mlstack.yaml": CLEAN, "b/c/mlstack.yml": WARNING,
                     "env/pyvenv.cfg": "home = /usr\n", "a/notes.yaml": BROKEN,
                     **dict.fromkeys(NEVER_SEARCHED, BROKEN)})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_folder_is_searched_at_any_depth(projects, capsys):
    assert [str(p) for p in find_specs(["."])] == ["a/mlstack.yaml", "b/c/mlstack.yml"]
    assert main(["lint", "."]) == 0
    out = capsys.readouterr().out
    assert "b/c/mlstack.yml:" in out and "warning: MLS403" in out
    assert out.rstrip().endswith("0 error(s), 1 warning(s) in 2 files")


def test_lint_names_the_blueprints_folder(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["lint", "blueprints"]) == 0
    assert capsys.readouterr().out == f"{len(list(BLUEPRINTS.glob('*/mlstack.yaml')))} files clean\n"


@pytest.mark.parametrize("pattern", ["*/mlstack.yaml", "**/mlstack.yaml", "**/mlstack.y*ml",
                                     "[ab]"])
def test_glob_patterns_are_expanded_here(pattern, projects):
    found = [str(p) for p in find_specs([pattern])]
    assert "a/mlstack.yaml" in found
    assert not any(p.startswith(("node_modules", "a/build", "a/.mlstack", ".venv", "env/"))
                   for p in found)
    assert "a/notes.yaml" not in found


def test_a_file_is_linted_whatever_its_name_and_once(projects):
    assert [str(p) for p in find_specs(["a/notes.yaml", "a", "./a/mlstack.yaml"])] == [
        "a/notes.yaml", "a/mlstack.yaml"]


def test_a_git_repository_is_searched_as_git_sees_it(projects):
    """.gitignore'd specs are skipped (tracked or not, as git decides); untracked ones that
    are not ignored are found."""
    _tree(projects, {".gitignore": "scratch/\n", "scratch/mlstack.yaml": BROKEN,
                     "new/mlstack.yaml": CLEAN})
    subprocess.run(["git", "init", "-q"], cwd=projects, check=True)
    found = [str(p) for p in find_specs(["."])]
    assert found == ["a/mlstack.yaml", "b/c/mlstack.yml", "new/mlstack.yaml"]
    # named on purpose, an ignored folder is still linted
    assert [str(p) for p in find_specs(["scratch"])] == ["scratch/mlstack.yaml"]


def test_a_missing_path_is_one_finding_among_the_others(projects, capsys):
    assert main(["lint", "a", "missing.yaml", "empty-pattern-*/mlstack.yaml", "b"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("a/mlstack.yaml") is False  # a is clean: no line of its own
    assert "missing.yaml:1:1: error: MLS012 no such file or folder" in out
    assert any(line.startswith("empty-pattern-*/mlstack.yaml:1:1: error: MLS012") for line in out)
    assert any("warning: MLS403" in line for line in out)
    assert out[-1] == "2 error(s), 1 warning(s) in 4 files"


def test_a_folder_with_no_spec_is_a_finding(tmp_path, monkeypatch, capsys):
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "docs"]) == 2
    assert "docs:1:1: error: MLS012 no mlstack.yaml in docs or below" in capsys.readouterr().out


def test_an_unreadable_spec_is_a_finding(projects, capsys):
    (projects / "dangling.yaml").symlink_to(projects / "nowhere.yaml")
    assert main(["lint", "dangling.yaml", "b"]) == 2
    out = capsys.readouterr().out
    assert "dangling.yaml:1:1: error: MLS012" in out and "warning: MLS403" in out


@pytest.mark.parametrize("fmt", ["json", "sarif", "github", "text"])
def test_every_format_stays_complete_with_a_missing_path(fmt, projects, capsys):
    assert main(["lint", "--format", fmt, "missing.yaml", "b", str(CORPUS /
                                                                   "ref_unknown_entity.yaml")]) == 2
    out = capsys.readouterr().out
    if fmt == "json":
        codes = {d["code"] for d in json.loads(out)["diagnostics"]}
    elif fmt == "sarif":
        doc = json.loads(out)
        assert_sarif_2_1_0(doc)
        codes = {r["ruleId"] for r in doc["runs"][0]["results"]}
    elif fmt == "github":
        lines = out.splitlines()
        assert all(ANNOTATION_RE.match(line) for line in lines), lines
        codes = {ANNOTATION_RE.match(line).group(5) for line in lines}
    else:
        codes = set(re.findall(r"(MLS\d{3}) ", out))
    assert codes >= {"MLS012", "MLS403", "MLS201"}


def test_lint_exit_codes(projects):
    assert main(["lint", "a"]) == 0
    assert main(["lint", "b"]) == 0
    assert main(["lint", "--strict", "b"]) == 1
    assert main(["lint", "a", str(CORPUS / "ref_unknown_entity.yaml")]) == 1
    assert main(["lint", "a", "missing"]) == 2


def test_find_specs_reports_what_it_cannot_find(projects):
    (missing,) = find_specs(["nope/*.yaml"])
    assert isinstance(missing, Missing) and missing.given == "nope/*.yaml"


# --- SARIF links to the docs ---------------------------------------------------------------

def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_sarif_rules_link_to_their_section_of_the_diagnostics_doc():
    doc = (REPO / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    anchors = {_github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", doc, flags=re.M)}
    for code in CODES:
        uri = help_uri(code)
        base, fragment = uri.split("#")
        assert base == DIAGNOSTICS_DOC and base.endswith("/docs/diagnostics.md")
        assert fragment in anchors, code
    d = Diagnostic("MLS101", Severity.ERROR, "m", Location("a.yaml"))
    (rule,) = json.loads(render_sarif([d]))["runs"][0]["tool"]["driver"]["rules"]
    assert rule["helpUri"] == help_uri("MLS101")


def test_sarif_of_a_usage_error_is_valid_and_says_why(capsys):
    assert main(["lint", "--format", "sarif", "--no-such-option"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert_sarif_2_1_0(doc)
    (invocation,) = doc["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False and invocation["exitCode"] == 2
    assert "no-such-option" in invocation["toolExecutionNotifications"][0]["message"]["text"]
