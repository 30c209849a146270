"""The docs: generated references are not stale, and the getting-started guide is true."""

from __future__ import annotations

import re

import pytest

from mlstack.cli.commands import VERBS
from mlstack.cli.docs_gen import generated_docs
from mlstack.cli.main import main
from mlstack.diagnostics.codes import CODES
from mlstack.frontend.spec.models import SystemSpec
from tests.conftest import REPO

DOCS = REPO / "docs"
GENERATED = generated_docs(REPO)


@pytest.mark.parametrize("path", sorted(GENERATED), ids=lambda p: p.name)
def test_generated_doc_is_not_stale(path):
    assert path.is_file(), f"{path.name} is missing: run python -m mlstack.cli.docs_gen"
    assert path.read_text(encoding="utf-8") == GENERATED[path], (
        f"docs/{path.name} is stale: run python -m mlstack.cli.docs_gen")


def test_spec_reference_lists_every_key():
    text = GENERATED[DOCS / "spec-reference.md"]
    for name, info in SystemSpec.model_fields.items():
        assert f"| `{info.alias or name}` |" in text


def test_cli_reference_covers_every_verb():
    text = GENERATED[DOCS / "cli.md"]
    for verb in VERBS:
        assert f"## mlstack {verb}\n" in text


def test_diagnostics_reference_explains_every_code_with_an_example():
    text = GENERATED[DOCS / "diagnostics.md"]
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    assert [s.split("\n", 1)[0] for s in sections] == sorted(CODES)
    without_example = [s.split("\n", 1)[0] for s in sections if "```text" not in s]
    assert without_example == ["MLS009"]  # a 1 MB file has no short example


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text)


def test_links_between_docs_resolve():
    for path in sorted(DOCS.glob("*.md")):
        for target in _links(path.read_text(encoding="utf-8")):
            assert (path.parent / target).is_file(), f"{path.name} links to missing {target}"


def _shell_lines(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]


def test_getting_started_names_only_real_verbs():
    lines = [ln for ln in _shell_lines((DOCS / "getting-started.md").read_text())
             if ln.startswith("mlstack ")]
    assert lines
    assert sorted({ln.split()[1] for ln in lines} - set(VERBS)) == []


def test_getting_started_walkthrough_is_true(tmp_path, monkeypatch, capsys):
    """Run the guide's init and lint commands, and its misspelt-key example, for real."""
    text = (DOCS / "getting-started.md").read_text()
    monkeypatch.chdir(tmp_path)
    for line in _shell_lines(text):
        if line.startswith(("mlstack init", "mlstack lint")):
            assert main(line.split()[1:]) == 0, line
    assert "1 file clean" in capsys.readouterr().out
    spec = tmp_path / "my-churn" / "mlstack.yaml"
    spec.write_text(re.sub(r"^metadata:", "metadatta:", spec.read_text(), flags=re.M))
    assert main(["lint", "my-churn/mlstack.yaml"]) == 1
    shown = re.search(r"```text\n(my-churn/mlstack.yaml:.*?)```", text, flags=re.S).group(1)
    assert capsys.readouterr().out == shown
