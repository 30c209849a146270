"""Bundled blueprints and `mlstack init`: scaffold a project from one."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlstack.codegen.package_data import blueprints_dir, schemas_dir
from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.schema import SCHEMA_FILE

SPEC_FILE = "mlstack.yaml"
MODELINE_RE = re.compile(r"^# yaml-language-server: \$schema=.*$", re.M)
SKIP = {"__pycache__", ".state", "build"}


@dataclass(frozen=True)
class Blueprint:
    name: str
    path: Path
    summary: str


def list_blueprints() -> list[Blueprint]:
    root = blueprints_dir()
    found = []
    for spec in sorted(root.glob(f"*/{SPEC_FILE}")):
        readme = spec.parent / "README.md"
        summary = ""
        if readme.is_file():
            lines = [ln.strip() for ln in readme.read_text().splitlines() if ln.strip()]
            summary = next((ln for ln in lines if not ln.startswith("#")), "")
        found.append(Blueprint(spec.parent.name, spec.parent, summary))
    return found


def get_blueprint(name: str) -> Blueprint:
    from mlstack.diagnostics.diagnostic import hint_for

    blueprints = {b.name: b for b in list_blueprints()}
    if name not in blueprints:
        raise UsageError(f"no blueprint named '{name}'", hint_for(name, blueprints))
    return blueprints[name]


@dataclass(frozen=True)
class InitResult:
    directory: Path
    blueprint: str
    files: tuple[str, ...]


def init_project(directory: Path, blueprint: str, force: bool = False) -> InitResult:
    """Copy a blueprint (spec, data, README) into `directory`; point its modeline at a local
    copy of the JSON Schema. Refuses a non-empty folder unless `force`."""
    bp = get_blueprint(blueprint)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise UsageError(f"{directory} is not empty", "choose an empty folder or pass --force")
    files = []
    staging = directory.parent / f".{directory.name}.mlstack-init"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        shutil.copytree(bp.path, staging, ignore=shutil.ignore_patterns(*SKIP))
        spec = staging / SPEC_FILE
        text = MODELINE_RE.sub(f"# yaml-language-server: $schema={SCHEMA_FILE}", spec.read_text())
        spec.write_text(text)
        shutil.copyfile(schemas_dir() / SCHEMA_FILE, staging / SCHEMA_FILE)
        directory.mkdir(parents=True, exist_ok=True)
        for src in sorted(staging.rglob("*")):
            rel = src.relative_to(staging)
            dest = directory / rel
            if src.is_dir():
                dest.mkdir(exist_ok=True)
                continue
            shutil.copyfile(src, dest)
            files.append(rel.as_posix())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return InitResult(directory, bp.name, tuple(sorted(files)))
