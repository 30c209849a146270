"""Section 1: cold `mlstack lint` of a blueprint vs the floor `python -c "import pydantic,
yaml, jinja2"`, each a fresh process, interleaved. Also a second floor that builds one pydantic
model (`import pydantic` alone is lazy and builds nothing), and where lint's time goes."""

from __future__ import annotations

import json

from bench.common import MLSTACK, PYTHON, REPO, child_env, median, ratio, rnd, timed_run

SPEC = REPO / "blueprints" / "churn" / "mlstack.yaml"
FLOOR = "import pydantic, yaml, jinja2"
MODEL_FLOOR = "import yaml\nfrom pydantic import BaseModel\nclass A(BaseModel):\n    x: int\nA(x=1)"
GOAL = 1.5
# in one process: the phases of a lint, timed with perf_counter (median over runs)
PHASES = r"""
import json, time
t0 = time.perf_counter()
import pydantic, yaml
t1 = time.perf_counter()
from pydantic import BaseModel
t2 = time.perf_counter()
from mlstack.cli.main import build_parser
build_parser()
t3 = time.perf_counter()
import mlstack.cli.commands.lint as verb
with verb._no_pydantic_plugins():
    class First(BaseModel):
        x: int
    t3b = time.perf_counter()
    import mlstack.frontend.ir.nodes
    t4 = time.perf_counter()
    import mlstack.frontend.spec.models
    t5 = time.perf_counter()
    import mlstack.frontend.analysis, mlstack.frontend.spec.validate, mlstack.frontend.ir.resolve, mlstack.frontend.checks, mlstack.diagnostics.formats
    t6 = time.perf_counter()
    from mlstack.frontend.loader import load_spec_file
    doc = load_spec_file(SPEC)
    t7 = time.perf_counter()
    mlstack.frontend.analysis.analyze_spec(SPEC)
    t8 = time.perf_counter()
print(json.dumps({
    "import pydantic + yaml (floor part)": t1 - t0,
    "pydantic.BaseModel machinery (lazy part of pydantic)": t2 - t1,
    "cli parser (argparse, verb modules)": t3 - t2,
    "first pydantic model class (pydantic's lazy schema machinery)": t3b - t3,
    "IR model classes (mlstack.frontend.ir.nodes)": t4 - t3b,
    "spec model classes (mlstack.frontend.spec.models)": t5 - t4,
    "other lint modules": t6 - t5,
    "YAML load with source map": t7 - t6,
    "load + validate + resolve + checks": t8 - t7,
}))
"""


def run(runs: int = 15) -> dict:
    env = child_env()
    cases = {
        "lint": [MLSTACK, "lint", str(SPEC)],
        "floor": [PYTHON, "-c", FLOOR],
        "pydantic_model_floor": [PYTHON, "-c", MODEL_FLOOR],
    }
    for argv in cases.values():  # writes the bytecode caches, as any earlier run would have
        timed_run(argv, env=env, cwd=REPO)
    wall = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    for _ in range(runs):
        for name, argv in cases.items():
            w, c, _out = timed_run(argv, env=env, cwd=REPO)
            wall[name].append(w)
            cpu[name].append(c)
    phases: dict[str, list[float]] = {}
    for _ in range(5):
        _w, _c, out = timed_run([PYTHON, "-c", f"SPEC = {str(SPEC)!r}\n" + PHASES], env=env,
                                cwd=REPO)
        for name, seconds in json.loads(out.strip().splitlines()[-1]).items():
            phases.setdefault(name, []).append(seconds)
    medians = {name: median(v) for name, v in wall.items()}
    cpu_medians = {name: median(v) for name, v in cpu.items()}
    lint_ratio = ratio(medians["lint"], medians["floor"])
    result = {
        "runs": runs,
        "spec": str(SPEC.relative_to(REPO)),
        "wall_s": {k: rnd(v, 4) for k, v in medians.items()},
        "cpu_s": {k: rnd(v, 4) for k, v in cpu_medians.items()},
        "ratio": rnd(lint_ratio),
        "ratio_cpu": rnd(ratio(cpu_medians["lint"], cpu_medians["floor"])),
        "ratio_vs_pydantic_model_floor": rnd(ratio(medians["lint"],
                                                    medians["pydantic_model_floor"])),
        "goal": f"ratio <= {GOAL}",
        "goal_met": lint_ratio is not None and lint_ratio <= GOAL,
        "phases_ms": {k: rnd(median(v) * 1000, 1) for k, v in phases.items()},
    }
    return result
