"""Lint + compile one spec in a fresh process; print one JSON object with the phases' times.

    python bench/workers/compile_size.py SPEC [--tracemalloc]

Times are of the first call in the process (what `mlstack compile` pays), imports excluded.
With --tracemalloc, only the peak of Python allocations during lint + compile is reported
(tracing slows the run, so it is a separate process).
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path


def main() -> int:
    spec = Path(sys.argv[1])
    trace = "--tracemalloc" in sys.argv
    from mlstack.codegen import formatter as pyformat
    from mlstack.codegen.generate import compile_system
    from mlstack.frontend.analysis import require_system
    from mlstack.workspace.build import compile_options, spec_paths

    formatting = []
    original = pyformat.format_python

    def timed_format(files):
        began = time.perf_counter()
        try:
            return original(files)
        finally:
            formatting.append(time.perf_counter() - began)

    import mlstack.codegen.generate

    mlstack.codegen.generate.format_python = timed_format
    paths = spec_paths(spec, spec.parent / "out")
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    system, _analysis = require_system(paths.spec)
    t1 = time.perf_counter()
    tree = compile_system(system, compile_options(paths))
    t2 = time.perf_counter()
    out = {"lint_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0,
           "format_s": sum(formatting), "files": len(tree),
           "bytes": sum(len(c) for _p, c in tree.items()),
           "features": len(system.model.features)}
    if trace:
        out = {"tracemalloc_peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
