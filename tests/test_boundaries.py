"""Layer boundaries: lower layers never import higher ones, and lint never loads the runtime
libraries (they cost seconds to import and are an optional extra)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BLUEPRINTS, REPO

PACKAGE = REPO / "mlstack"
HEAVY = ("prefect", "feast", "bentoml", "sklearn", "pandas", "jinja2", "numpy", "pyarrow")
HIGHER = ("mlstack.backends", "mlstack.commands", "mlstack.cli", "mlstack.deploy")
RULES = {  # layer -> layers it must never import (a layer is a module or a package)
    "mlstack.spec": HIGHER + ("mlstack.ir", "mlstack.checks", "mlstack.lint"),
    "mlstack.ir": HIGHER + ("mlstack.checks", "mlstack.lint"),
    "mlstack.checks": HIGHER,
    "mlstack.loader": HIGHER + ("mlstack.spec", "mlstack.ir", "mlstack.checks"),
    "mlstack.expr": HIGHER + ("mlstack.spec", "mlstack.ir", "mlstack.checks"),
    "mlstack.lint": HIGHER,
    "mlstack.formats": HIGHER,
    "mlstack.backends": ("mlstack.commands", "mlstack.cli", "mlstack.deploy"),
    "mlstack.commands": ("mlstack.cli",),
}
LINT_PATH = ("mlstack.loader", "mlstack.spec", "mlstack.ir", "mlstack.checks", "mlstack.lint",
             "mlstack.formats", "mlstack.diagnostics", "mlstack.expr", "mlstack.codes",
             "mlstack.errors", "mlstack.commands.lint")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, imported at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, id(node) in top_level))
            found += [(f"{name}.{alias.name}", id(node) in top_level) for alias in node.names]
    return found


def _within(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_import_graph_is_read():
    assert "mlstack.spec.models" in MODULES and "mlstack.ir.resolve" in MODULES
    imported = {name for name, _ in _imports(MODULES["mlstack.ir.resolve"])}
    assert "mlstack.spec.models" in imported


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_does_not_import_higher_layers(layer):
    offences = []
    for module, path in MODULES.items():
        if not _within(module, layer):
            continue
        for name, _ in _imports(path):
            offences += [f"{module} imports {name}" for banned in RULES[layer]
                         if _within(name, banned)]
    assert offences == []


def test_lint_path_imports_no_runtime_library_at_module_level():
    offences = [f"{module} imports {name}" for module, path in MODULES.items()
                if any(_within(module, layer) for layer in LINT_PATH)
                for name, top in _imports(path)
                if top and name.split(".")[0] in HEAVY]
    assert offences == []


LINT_AND_LIST_MODULES = """
import json, sys
from mlstack.cli import main
codes = [main(["lint", path]) for path in sys.argv[1:]]
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.stdin.read())))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_lint_loads_none_of_the_runtime_libraries():
    specs = [str(p) for p in sorted(BLUEPRINTS.glob("*/mlstack.yaml"))]
    proc = subprocess.run([sys.executable, "-c", LINT_AND_LIST_MODULES, *specs],
                          input=json.dumps(HEAVY), capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0] * len(specs)
    assert result["heavy"] == []
