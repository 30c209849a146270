"""Which JSON Schema file a project's editors read: the one its spec's modeline names.

A spec's first lines may hold `# yaml-language-server: $schema=PATH` (mlstack init writes
`$schema=mlstack.schema.json` and puts the schema next to the spec). `mlstack schema` writes
and checks that file when run in such a project, and `schemas/mlstack.schema.json` (this
repository's layout) elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MODELINE_RE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(?P<target>\S+)\s*$")
SPEC_NAMES = ("mlstack.yaml", "mlstack.yml")
DEFAULT_SCHEMA = Path("schemas") / "mlstack.schema.json"
MODELINE_LINES = 5  # editors read the modeline near the top; so do we


@dataclass(frozen=True)
class SchemaTarget:
    path: Path
    reason: str  # why this file, in words (shown by `mlstack schema`)


def modeline_schema(spec: Path) -> str | None:
    """The `$schema=` target of a spec's yaml-language-server modeline, as written."""
    try:
        with open(spec, encoding="utf-8", errors="replace") as f:
            head = [f.readline() for _ in range(MODELINE_LINES)]
    except OSError:
        return None
    for line in head:
        match = MODELINE_RE.match(line.strip())
        if match:
            return match["target"]
    return None


def _is_local(target: str) -> bool:
    return "://" not in target and not target.startswith("file:")


def schema_target(folder: Path = Path(".")) -> SchemaTarget:
    """The schema file of the project in `folder`: the one its spec's modeline names when that
    is a local path, else the repository's schemas/mlstack.schema.json."""
    for name in SPEC_NAMES:
        spec = folder / name
        if not spec.is_file():
            continue
        target = modeline_schema(spec)
        if target and _is_local(target):
            return SchemaTarget(folder / target, f"the schema {spec}'s modeline names")
        return SchemaTarget(folder / DEFAULT_SCHEMA, f"{spec} has no modeline naming a local "
                            "schema file, so the repository layout's")
    return SchemaTarget(folder / DEFAULT_SCHEMA, "no mlstack.yaml here, so the repository "
                        "layout's")
