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


def test_init_without_a_folder_is_a_usage_error(capsys):
    assert main(["init"]) == 2
    assert "init needs a folder" in capsys.readouterr().err


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
