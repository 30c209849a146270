"""`mlstack init`: scaffold a project from a bundled blueprint."""

from __future__ import annotations

import json
import os

import pytest

from mlstack.cli.main import main
from mlstack.frontend.analysis import analyze_spec
from mlstack.workspace.blueprints import list_blueprints
from tests.conftest import BLUEPRINTS

NAMES = sorted(p.parent.name for p in BLUEPRINTS.glob("*/mlstack.yaml"))


def test_list_names_every_blueprint_with_a_summary(capsys):
    assert main(["init", "--list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert all(bp.summary for bp in list_blueprints())


def test_list_summaries_are_whole_sentences(capsys):
    """A summary is the README's first paragraph, whole: never a line cut mid-sentence."""
    for bp in list_blueprints():
        paragraph = (bp.path / "README.md").read_text().split("\n\n")[1]
        assert bp.summary == " ".join(paragraph.split()), bp.name
        assert bp.summary[:1].isupper() and bp.summary.endswith((".", "?", "!")), bp.summary
    assert main(["init", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(NAMES)
    assert all(line.endswith((".", "?", "!")) for line in lines)


def test_readme_summary_joins_the_first_paragraph():
    from mlstack.workspace.blueprints import readme_summary

    assert readme_summary("# t\n\nOne line\ncontinued. Two.\n\nNext.\n") == (
        "One line continued. Two.")
    assert readme_summary("no title. here\n") == "no title. here"
    assert readme_summary("# only a title\n") == ""


@pytest.mark.parametrize("name", NAMES)
def test_init_scaffolds_a_project_that_lints_clean(name, tmp_path, capsys):
    project = tmp_path / "proj"
    assert main(["init", str(project), "--blueprint", name]) == 0
    assert f"Created {project}" in capsys.readouterr().out
    spec = project / "mlstack.yaml"
    assert spec.read_text().splitlines()[0] == (
        "# yaml-language-server: $schema=mlstack.schema.json")
    json.loads((project / "mlstack.schema.json").read_text())
    assert (project / "README.md").is_file()
    assert not list(project.rglob("__pycache__"))
    analysis = analyze_spec(spec)
    assert analysis.errors == [] and analysis.system is not None
    for src in analysis.system.sources:
        if src.path:
            assert (project / src.path).is_file(), f"{name}: {src.path} not scaffolded"


def test_init_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "notes.txt").write_text("mine\n")
    assert main(["init", str(project)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--force" in err
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
    assert main(["init", str(project), "--force"]) == 0
    assert (project / "notes.txt").read_text() == "mine\n"
    assert (project / "mlstack.yaml").is_file()


def test_init_into_an_existing_empty_folder(tmp_path):
    assert main(["init", str(tmp_path)]) == 0
    assert (tmp_path / "mlstack.yaml").is_file()


def test_init_unknown_blueprint_suggests_the_closest(tmp_path, capsys):
    assert main(["init", str(tmp_path / "p"), "--blueprint", "chrn"]) == 2
    assert "did you mean 'churn'?" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_init_without_a_folder_scaffolds_the_current_one(tmp_path, monkeypatch, capsys):
    """Like `git init`: the current folder, when it is empty."""
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "Created the current folder" in out and "cd " not in out
    assert (tmp_path / "mlstack.yaml").is_file()
    assert main(["init"]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_init_onto_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["init", str(target)]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("link", ["mlstack.yaml", "data", "data/customers.parquet"])
def test_init_force_never_writes_through_a_symlink(link, tmp_path, capsys):
    project, outside = tmp_path / "proj", tmp_path / "outside"
    (project / "data").mkdir(parents=True)
    outside.mkdir()
    victim = outside / "victim"
    if link == "data":
        victim.mkdir()
        (project / "data").rmdir()
    else:
        victim.write_text("precious\n")
    (project / link).symlink_to(victim)
    before = sorted(p.name for p in project.rglob("*"))
    assert main(["init", str(project), "--force"]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and link in err
    assert sorted(p.name for p in project.rglob("*")) == before  # nothing written first
    if link == "data":
        assert list(victim.iterdir()) == []
    else:
        assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_init_force_replaces_a_hard_linked_file_without_writing_into_it(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    victim = tmp_path / "victim.yaml"
    victim.write_text("precious\n")
    os.link(victim, project / "mlstack.yaml")
    assert main(["init", str(project), "--force"]) == 0
    assert victim.read_text() == "precious\n"
    assert (project / "mlstack.yaml").read_text().startswith("# yaml-language-server")


def test_init_refuses_a_folder_where_a_file_goes(tmp_path, capsys):
    project = tmp_path / "proj"
    (project / "mlstack.yaml").mkdir(parents=True)
    assert main(["init", str(project), "--force"]) == 2
    assert "in the way" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == ["mlstack.yaml"]


def test_init_keeps_a_folder_named_like_its_staging_folder(tmp_path):
    project = tmp_path / "proj"
    mine = tmp_path / ".proj.mlstack-init"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine\n")
    assert main(["init", str(project)]) == 0
    assert (mine / "keep.txt").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".proj.mlstack-init", "proj"]


# --- .gitignore, the schema modeline and `mlstack schema` in an init'd project -------------

def test_init_writes_a_gitignore_for_build_and_state(tmp_path):
    assert main(["init", str(tmp_path / "proj")]) == 0
    lines = (tmp_path / "proj" / ".gitignore").read_text().splitlines()
    assert "build/" in lines and ".mlstack/" in lines


def test_init_force_adds_to_an_existing_gitignore(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".gitignore").write_text("*.log\n/build\n")
    assert main(["init", str(project), "--force"]) == 0
    text = (project / ".gitignore").read_text()
    assert text.startswith("*.log\n/build\n")  # the user's lines, as they were
    assert text.count("build") == 1 and ".mlstack/" in text.splitlines()
    assert main(["init", str(project), "--force"]) == 0
    assert (project / ".gitignore").read_text() == text  # nothing added twice


def test_the_gitignore_keeps_build_and_state_out_of_git(tmp_path):
    import subprocess

    project = tmp_path / "proj"
    assert main(["init", str(project)]) == 0
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    for rel in ("build/x.py", ".mlstack/deployments.json"):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("x")
    proc = subprocess.run(["git", "check-ignore", "build/x.py", ".mlstack/deployments.json",
                           "mlstack.yaml"], cwd=project, capture_output=True, text=True)
    assert proc.stdout.split() == ["build/x.py", ".mlstack/deployments.json"]


@pytest.mark.parametrize("name", NAMES)
def test_the_modeline_resolves_to_the_shipped_schema(name, tmp_path):
    """The spec's yaml-language-server modeline names a file that exists next to it, and it
    is this mlstack's schema (the blueprint's own modeline resolves in the package too)."""
    from mlstack.codegen.package_data import blueprints_dir, schemas_dir
    from mlstack.frontend.schema import spec_json_schema_text
    from mlstack.workspace.schema_file import modeline_schema

    project = tmp_path / "proj"
    assert main(["init", str(project), "--blueprint", name]) == 0
    target = project / modeline_schema(project / "mlstack.yaml")
    assert target.is_file() and target.read_text() == spec_json_schema_text()
    shipped = blueprints_dir() / name / "mlstack.yaml"
    assert (shipped.parent / modeline_schema(shipped)).resolve() == (
        schemas_dir() / "mlstack.schema.json").resolve()


def test_schema_check_in_an_init_project_checks_its_own_schema(tmp_path, monkeypatch, capsys):
    project = tmp_path / "proj"
    assert main(["init", str(project)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(project)
    assert main(["schema", "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mlstack.schema.json is up to date")
    assert "mlstack.yaml's modeline" in out
    assert not (project / "schemas").exists()
    (project / "mlstack.schema.json").write_text("{}\n")
    assert main(["schema", "--check", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["path"], doc["state"]) == ("mlstack.schema.json", "stale")
    assert main(["schema"]) == 0  # rewrites the file the modeline names
    assert "mlstack.schema.json written" in capsys.readouterr().out
    assert main(["-C", str(project), "schema", "--check"]) == 0


def test_schema_outside_a_project_uses_the_repository_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["schema", "--check"]) == 1
    err = capsys.readouterr().err
    assert "schemas/mlstack.schema.json" in err and "missing" in err
    assert main(["schema"]) == 0
    assert (tmp_path / "schemas" / "mlstack.schema.json").is_file()
