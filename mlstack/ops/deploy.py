"""The deploy verbs' library functions: deploy, status, down, rollback, logs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mlstack.diagnostics.errors import EXTRA_MODULES, MissingExtraError, UsageError
from mlstack.frontend.ir.catalog import FRAMEWORK_EXTRAS
from mlstack.ops.cluster.deploy import ClusterDeployResult, ClusterOptions, Confirm
from mlstack.ops.local.deploy import DeployOptions, deploy_local
from mlstack.ops.paths import ProjectPaths, project_lock
from mlstack.ops.report import DeployResult, StageRecord, StageStatus

CLUSTER_TARGETS = ("kubernetes", "aws")


def deploy(spec: Path | str, options: DeployOptions, progress=None,
           cluster: ClusterOptions | None = None,
           confirm: Confirm | None = None) -> DeployResult | ClusterDeployResult:
    """Compile and write the spec, then bring the system up on its target: the local stack
    (mlstack.ops.local.deploy), or the infrastructure of a kubernetes/aws target through
    terraform (mlstack.ops.cluster.deploy; `cluster` holds its options, `confirm` is asked
    before applying when neither dry_run nor auto_approve is set)."""
    import time

    from mlstack.workspace.build import compile_spec, spec_paths

    cluster = cluster or ClusterOptions()
    found = spec_paths(spec)
    paths = ProjectPaths.for_spec(found.spec)
    with project_lock(paths):  # compile too: a concurrent deploy must not rewrite build/
        if progress is not None:
            progress.start("compile")
        began = time.perf_counter()
        compiled, written = compile_spec(found.spec, paths.build_dir, force=options.force)
        record = StageRecord("compile", StageStatus.DONE, round(time.perf_counter() - began, 3),
                             f"{len(written.changed)} of {len(written.changes)} files changed")
        if progress is not None:
            progress.finish(record)
        kind = compiled.system.target.kind
        result: DeployResult | ClusterDeployResult
        if kind in CLUSTER_TARGETS:
            from mlstack.ops.cluster.deploy import deploy_cluster

            result = deploy_cluster(compiled.system, paths, cluster, progress, confirm)
        elif kind != "local":
            raise UsageError(f"deploy to a {kind} target is not supported yet",
                             "use target.kind: local, kubernetes or aws")
        elif cluster.given:
            raise UsageError("--dry-run, --auto-approve, --var, --var-file and --tf-override "
                             "are for kubernetes and aws targets; this spec's target is local")
        else:
            require_extra("runtime", "a deploy to a local target")
            require_framework(compiled.system.model.framework)
            result = deploy_local(compiled.system, paths, options, progress)
    result.stages.insert(0, record)
    result.warnings = list(compiled.warnings)
    return result


def compile_project(spec: Path | str, out_dir: Path | str | None = None, *, force: bool = False,
                    dry_run: bool = False):
    """`mlstack compile`: compile_spec under the project lock, so a compile never rewrites
    build/ under a deploy, rollback or down at work (UsageError, as they refuse each other).
    A project never deployed has no state folder and nothing to hold its lock: it is not
    created, so compile writes nothing outside its output folder."""
    from mlstack.workspace.build import compile_spec, spec_paths

    found = spec_paths(spec, out_dir)
    paths = ProjectPaths.for_spec(found.spec)
    if not paths.state_dir.is_dir():
        return compile_spec(found.spec, out_dir, force=force, dry_run=dry_run)
    with project_lock(paths):
        return compile_spec(found.spec, out_dir, force=force, dry_run=dry_run)


def require_extra(extra: str, needed_for: str) -> None:
    """Refuse early, naming the extra, when one of its libraries is not installed (a local
    deploy runs the generated code, and its load test, with this Python). Cluster targets need
    none: synth runs in its own environment and terraform is a program."""
    for module in EXTRA_MODULES[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(extra, module, needed_for)


def require_framework(framework: str) -> None:
    """Refuse before training, naming the extra, when the model's framework is not installed
    (the training worker and the service import it); scikit-learn is in the runtime extra."""
    if framework in FRAMEWORK_EXTRAS:
        require_extra(FRAMEWORK_EXTRAS[framework], f"a {framework} model")
