"""Regenerate the golden files: generated/<blueprint>/ for every blueprints/*/mlstack.yaml.

    .venv/bin/python -m tests.update_goldens            # every blueprint
    .venv/bin/python -m tests.update_goldens churn      # just these

Each blueprint is compiled with output folder generated/<blueprint> (so the generated code's
project_dir is ../../blueprints/<blueprint>) through the one writer, with force (the goldens
are never edited by hand); files in a golden folder that the compiler did not produce are
removed, as are golden folders of blueprints that no longer exist. Every change is printed:
review them with `git diff generated/` before committing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mlstack.workspace.build import compile_tree
from mlstack.workspace.manifest import MANIFEST_NAME, build_manifest
from mlstack.workspace.writer import write_tree

REPO = Path(__file__).resolve().parent.parent
BLUEPRINTS = REPO / "blueprints"
GENERATED = REPO / "generated"
IGNORED_PARTS = {"__pycache__"}  # Python's byte-code caches, should anything import goldens

UPDATE_COMMAND = ".venv/bin/python -m tests.update_goldens"


def blueprint_specs() -> dict[str, Path]:
    return {spec.parent.name: spec for spec in sorted(BLUEPRINTS.glob("*/mlstack.yaml"))}


def expected_golden(name: str) -> dict[str, bytes]:
    """What generated/<name>/ must hold, byte for byte (the manifest included)."""
    compiled = compile_tree(blueprint_specs()[name], GENERATED / name)
    files = compiled.tree.as_dict()
    files[MANIFEST_NAME] = build_manifest(compiled.tree, compiled.system).to_bytes()
    return files


def golden_on_disk(name: str) -> dict[str, bytes]:
    root = GENERATED / name
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not IGNORED_PARTS & set(p.relative_to(root).parts)}


def update(names: list[str]) -> list[str]:
    """Rewrite the goldens of `names`; returns one line per change."""
    report: list[str] = []
    specs = blueprint_specs()
    for name in names:
        compiled = compile_tree(specs[name], GENERATED / name)
        result = write_tree(compiled.tree, GENERATED / name, system=compiled.system, force=True)
        report += [f"{c.action:7} generated/{name}/{c.path}" for c in result.changed]
        expected = set(compiled.tree.paths()) | {MANIFEST_NAME}
        for extra in sorted(set(golden_on_disk(name)) - expected):
            (GENERATED / name / extra).unlink()
            report.append(f"remove  generated/{name}/{extra} (not compiler output)")
    for folder in sorted(GENERATED.iterdir()) if GENERATED.is_dir() else []:
        if folder.is_dir() and folder.name not in specs and (folder / MANIFEST_NAME).exists():
            shutil.rmtree(folder)
            report.append(f"remove  generated/{folder.name}/ (no such blueprint)")
    return report


def main(argv: list[str]) -> int:
    specs = blueprint_specs()
    unknown = [n for n in argv if n not in specs]
    if unknown:
        sys.stderr.write(f"unknown blueprint(s): {', '.join(unknown)}; "
                         f"known: {', '.join(specs)}\n")
        return 2
    report = update(argv or list(specs))
    sys.stdout.write("".join(line + "\n" for line in report) or "goldens already up to date\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
