"""Golden files: every blueprint compiles to generated/<blueprint>/ byte for byte (manifest
included, no extra files), compiling twice gives identical bytes, and the generated Python
passes `ruff check` (default rules). Regenerate with: .venv/bin/python -m tests.update_goldens
"""

import difflib
import subprocess

import pytest

from mlstack.codegen.formatter import LINE_LENGTH, _ruff
from mlstack.workspace.build import compile_tree
from mlstack.workspace.manifest import MANIFEST_NAME, build_manifest, read_manifest
from mlstack.workspace.writer import write_tree
from tests.update_goldens import (
    GENERATED,
    UPDATE_COMMAND,
    blueprint_specs,
    expected_golden,
    golden_on_disk,
)

BLUEPRINTS = sorted(blueprint_specs())
HOW_TO_FIX = (f"the goldens are stale: run `{UPDATE_COMMAND}` (add blueprint names to limit it), "
              "review `git diff generated/`, and commit the result with the change that caused "
              "it")


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_blueprint_compiles_to_its_golden_files(name):
    expected = expected_golden(name)
    on_disk = golden_on_disk(name)
    missing = sorted(set(expected) - set(on_disk))
    extra = sorted(set(on_disk) - set(expected))
    differ = sorted(p for p in set(expected) & set(on_disk) if expected[p] != on_disk[p])
    shown = sorted(differ, key=lambda p: (p == MANIFEST_NAME, p))[:1]  # a file, not the hashes
    first_diff = "".join(line for p in shown for line in list(difflib.unified_diff(
        on_disk[p].decode(errors="replace").splitlines(True),
        expected[p].decode(errors="replace").splitlines(True),
        f"golden/{p}", f"compiled/{p}"))[:30])
    assert not (missing or extra or differ), (
        f"generated/{name}: missing {missing}, extra {extra}, differ {differ}; {HOW_TO_FIX}\n"
        f"{first_diff}")


def test_no_golden_folder_without_a_blueprint():
    folders = sorted(p.name for p in GENERATED.iterdir() if p.is_dir())
    assert folders == BLUEPRINTS, HOW_TO_FIX


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_compiling_twice_gives_identical_bytes(name, tmp_path):
    spec = blueprint_specs()[name]
    first, second = compile_tree(spec, tmp_path / "out"), compile_tree(spec, tmp_path / "out")
    assert first.tree.as_dict() == second.tree.as_dict()
    assert (build_manifest(first.tree, first.system).to_bytes()
            == build_manifest(second.tree, second.system).to_bytes())
    write_tree(first.tree, tmp_path / "out", system=first.system)
    result = write_tree(second.tree, tmp_path / "out", system=second.system)
    assert result.changed == [] and not result.written
    assert read_manifest(tmp_path / "out").previous_system() == first.system  # IR round trip


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_generated_python_passes_ruff_check(name, tmp_path):
    compiled = compile_tree(blueprint_specs()[name], tmp_path / "out")
    write_tree(compiled.tree, tmp_path / "out", system=compiled.system)
    assert any(p.endswith(".py") for p in compiled.tree.paths())
    # default rules, the formatter's line length; run from the output root, as a user would:
    # the generated package is first-party there
    proc = subprocess.run([_ruff(), "check", "--isolated", "--no-cache", "--output-format=concise",
                           f"--line-length={LINE_LENGTH}", "--target-version=py311", "."],
                          capture_output=True, text=True, cwd=tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_golden_manifest_lists_every_file(tmp_path):
    for name in BLUEPRINTS:
        manifest = read_manifest(GENERATED / name)
        assert manifest is not None, HOW_TO_FIX
        assert set(manifest.files) | {MANIFEST_NAME} == set(golden_on_disk(name)), HOW_TO_FIX
