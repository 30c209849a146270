"""Layer boundaries. Every module of the package belongs to a layer, and imports go one way:

    diagnostics -> frontend -> codegen -> workspace -> ops -> cli      (runtime apart)

A module may import its own layer and the layers to its left, never one to its right; the
runtime imports nothing else of mlstack, and nothing of the compiler imports the runtime.
Only `cli` prints or exits. Lint never loads the runtime libraries (seconds of import time,
and an optional extra). An exception carries its reason and fails once it is not needed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import BLUEPRINTS, REPO

PACKAGE = REPO / "mlstack"
HEAVY = ("prefect", "feast", "bentoml", "sklearn", "pandas", "jinja2", "numpy", "pyarrow",
         "xgboost", "lightgbm", "torch", "onnxmltools")
# (layer, the module prefixes it holds), lowest first.
LAYERS = (
    ("base", ("mlstack", "mlstack.data")),  # the version string and bundled price tables
    ("diagnostics", ("mlstack.diagnostics",)),
    ("frontend", ("mlstack.frontend",)),
    ("codegen", ("mlstack.codegen",)),
    ("workspace", ("mlstack.workspace",)),
    ("ops", ("mlstack.ops",)),
    ("cli", ("mlstack.cli", "mlstack.__main__")),
)
RUNTIME = "mlstack.runtime"
# Inside the front end, the passes' own order: nothing imports a later pass.
FRONTEND_ORDER = ("mlstack.frontend.loader", "mlstack.frontend.expr", "mlstack.frontend.spec",
                  "mlstack.frontend.ir", "mlstack.frontend.checks", "mlstack.frontend.analysis")
FRONTEND_PEERS = {("mlstack.frontend.loader", "mlstack.frontend.expr"),
                  ("mlstack.frontend.expr", "mlstack.frontend.loader")}
# Allowed imports against the direction: (importer, imported) -> why. Each must still occur.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("mlstack.frontend.checks.data_checks", "mlstack.runtime.dtypes"):
        "lint --data judges a file's column types by ingest's own rule (a pure-Python module "
        "that imports nothing), so lint and ingest cannot disagree",
    ("mlstack.ops.local.traffic_split", "mlstack.runtime.assignment"):
        "the router's sticky A/B split assigns a key's arm by the runtime's own hash (a "
        "standard-library module), so the router and the experiment's analysis agree on arms",
    ("mlstack.ops.local.experiment", "mlstack.runtime.experiment_stats"):
        "the keeper decides an A/B experiment by the runtime's mSPRT (imported when it looks, "
        "in deploy's environment, which has the runtime extra), so the readout status shows "
        "and the decision carried out come from the one implementation the docs measure",
    ("mlstack.ops.local.exporter", "mlstack.runtime.monitoring_gauges"):
        "the local exporter serves the monitoring report's gauges computed by the runtime's "
        "own function (a standard-library module), the one the monitoring flow pushes to a "
        "cluster's Pushgateway with, so both targets' alert rules read the same series",
    ("mlstack.ops.local.experiment", "mlstack.runtime.feedback"):
        "the arms' outcomes are POST /feedback's joined with the log's index by the "
        "runtime's own reader (feedback.outcomes_by_version: one per request), not a second "
        "one",
}
# Modules outside cli that may print or exit: module -> why.
PRINTING_EXCEPTIONS = {
    "mlstack.ops.local.worker": "a subprocess entry point (python -m): its stdout is the JSON "
                                "result deploy reads, its stderr the traceback of a failed job",
}
LINT_PATH = ("mlstack.frontend", "mlstack.diagnostics", "mlstack.cli.commands.lint")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, imported at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: relative import"
            name = node.module or ""
            found.append((name, id(node) in top_level))
            found += [(f"{name}.{alias.name}", id(node) in top_level) for alias in node.names]
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer(module: str) -> int | None:
    """Index of the module's layer (the longest matching prefix), None when unplaced."""
    best, index = "", None
    for i, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_root = prefix == "mlstack" and module != "mlstack"
            if not exact_root and _within(module, prefix) and len(prefix) > len(best):
                best, index = prefix, i
    return index


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
COMPILER = {m: p for m, p in MODULES.items() if not _within(m, RUNTIME)}


def _internal_imports(module: str) -> list[str]:
    return sorted({name for name, _ in _imports(MODULES[module]) if _within(name, "mlstack")
                   and _resolves(name)})


def _resolves(name: str) -> bool:
    """An imported name that is a module of the package (not a function from one)."""
    return name in MODULES


def test_the_import_graph_is_read():
    assert "mlstack.frontend.spec.models" in MODULES and "mlstack.frontend.ir.resolve" in MODULES
    assert "mlstack.frontend.spec.models" in _internal_imports("mlstack.frontend.ir.resolve")


def test_every_module_is_placed_in_a_layer():
    assert [m for m in COMPILER if _layer(m) is None] == []


def test_imports_go_one_way():
    used, offences = set(), []
    for module in COMPILER:
        for name in _internal_imports(module):
            if _within(name, RUNTIME):
                offence = f"{module} imports the runtime {name}"
            elif _layer(name) > _layer(module):
                offence = (f"{module} ({LAYERS[_layer(module)][0]}) imports {name} "
                           f"({LAYERS[_layer(name)][0]})")
            else:
                continue
            key = next((k for k in EXCEPTIONS if k[0] == module and _within(name, k[1])), None)
            if key:
                used.add(key)
            else:
                offences.append(offence)
    assert offences == []
    assert set(EXCEPTIONS) - used == set(), "stale exceptions: remove them"


def _frontend_rank(module: str) -> int | None:
    return next((i for i, p in enumerate(FRONTEND_ORDER) if _within(module, p)), None)


def test_frontend_passes_import_only_earlier_passes():
    offences = []
    for module in COMPILER:
        rank = _frontend_rank(module)
        if rank is None:
            continue
        for name in _internal_imports(module):
            other = _frontend_rank(name)
            if other is not None and other > rank:
                pair = (FRONTEND_ORDER[rank], FRONTEND_ORDER[other])
                if pair not in FRONTEND_PEERS:
                    offences.append(f"{module} imports {name}")
    assert offences == []


def test_the_runtime_imports_nothing_else_of_mlstack():
    runtime = [m for m in MODULES if _within(m, RUNTIME)]
    assert runtime, "mlstack.runtime is missing"
    offences = [f"{m} imports {name}" for m in runtime for name, _ in _imports(MODULES[m])
                if _within(name, "mlstack") and not _within(name, RUNTIME)]
    assert offences == []


def _prints_or_exits(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("print", "exit", "quit"):
            found.append(f"{func.id}() at line {node.lineno}")
        elif isinstance(func, ast.Attribute):
            target = ast.unparse(func)
            if target in ("sys.exit", "os._exit", "sys.stdout.write", "sys.stderr.write",
                          "traceback.print_exc"):
                found.append(f"{target}() at line {node.lineno}")
    return found


def test_only_the_cli_prints_or_exits():
    offences, used = [], set()
    for module, path in COMPILER.items():
        if _layer(module) == len(LAYERS) - 1:
            continue
        if found := _prints_or_exits(path):
            if module in PRINTING_EXCEPTIONS:
                used.add(module)
            else:
                offences.append(f"{module}: {', '.join(found)}")
    assert offences == []
    assert set(PRINTING_EXCEPTIONS) - used == set(), "stale exceptions: remove them"


def test_lint_path_imports_no_runtime_library_at_module_level():
    offences = [f"{module} imports {name}" for module, path in MODULES.items()
                if any(_within(module, layer) for layer in LINT_PATH)
                for name, top in _imports(path)
                if top and name.split(".")[0] in HEAVY]
    assert offences == []


def test_the_runtime_package_imports_no_runtime_library_itself():
    proc = subprocess.run([sys.executable, "-c", "import json, sys, mlstack.runtime; "
                           "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) & set(HEAVY) == set()


LINT_AND_LIST_MODULES = """
import json, sys
from mlstack.cli.main import main
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


def test_contract_is_the_one_owner_of_the_flow_tasks():
    """Graph and deploy read the training flow's tasks from the contract, not a copy."""
    from mlstack.codegen import contract, graph
    from mlstack.ops.local import deploy

    assert graph.FLOW_TASKS is contract.TRAINING_TASKS
    assert deploy.FLOW_STAGES == tuple(t for t in contract.TRAINING_TASKS
                                       if t != contract.PROMOTE_TASK)
    assert "mlstack.codegen.contract" in _internal_imports("mlstack.codegen.graph")
