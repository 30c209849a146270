"""The deploy verbs' library functions: deploy, status, down, rollback, logs."""

from __future__ import annotations

from pathlib import Path

from mlstack.deploy.local import DeployOptions, deploy_local
from mlstack.deploy.paths import ProjectPaths
from mlstack.deploy.report import DeployResult, StageRecord
from mlstack.errors import UsageError


def deploy(spec: Path | str, options: DeployOptions, progress=None) -> DeployResult:
    """Compile and write the spec, then bring the system up on its target."""
    import time

    from mlstack.build import compile_spec, spec_paths

    found = spec_paths(spec)
    paths = ProjectPaths.for_spec(found.spec)
    if progress is not None:
        progress.start("compile")
    began = time.perf_counter()
    compiled, written = compile_spec(found.spec, paths.build_dir, force=options.force)
    record = StageRecord("compile", "done", round(time.perf_counter() - began, 3),
                         f"{len(written.changed)} of {len(written.changes)} files changed")
    if progress is not None:
        progress.finish(record)
    kind = compiled.system.target.kind
    if kind != "local":
        raise UsageError(f"deploy to a {kind} target is not supported yet",
                         "mlstack compile writes its feature, pipeline and service layers; "
                         "use target.kind: local to run it here")
    result = deploy_local(compiled.system, paths, options, progress)
    result.stages.insert(0, record)
    return result
