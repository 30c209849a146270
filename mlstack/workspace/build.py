"""Compile a spec file into an output folder: where the output goes, how the generated tree
finds the project, and the write itself (through the one writer).

`compile_spec(spec, out_dir)` is what `mlstack compile` (and deploy) call; `spec_paths` and
`compile_options` are shared with `mlstack plan`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.filetree import FileTree
from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.workspace.writer import WriteResult, write_tree

DEFAULT_OUT_DIR = "build"


@dataclass(frozen=True)
class SpecPaths:
    spec: Path  # the spec file
    project_dir: Path  # the spec's folder (source data paths are relative to it)
    out_dir: Path  # where the generated tree goes


def spec_paths(spec: Path | str, out_dir: Path | str | None = None) -> SpecPaths:
    """A spec file (or a folder holding mlstack.yaml) and its output folder
    (default: <spec folder>/build)."""
    spec = Path(spec)
    if spec.is_dir():
        spec = spec / "mlstack.yaml"
    out = Path(out_dir) if out_dir is not None else spec.parent / DEFAULT_OUT_DIR
    return SpecPaths(spec=spec, project_dir=spec.parent, out_dir=out)


def compile_options(paths: SpecPaths) -> CompileOptions:
    """`project_dir` = the spec's folder relative to the output folder, as a POSIX path (the
    generated tree holds no absolute path). Refused when no relative path exists."""
    project = paths.project_dir.resolve()
    out = paths.out_dir.resolve()
    try:
        relative = os.path.relpath(project, out)
    except ValueError:  # e.g. another drive on Windows
        raise UsageError(f"the spec folder {project} cannot be reached from the output folder "
                         f"{out} by a relative path", "put the output folder on the same drive "
                         "as the spec") from None
    posix = PurePosixPath(*Path(relative).parts).as_posix()
    if "\\" in posix or PurePosixPath(posix).is_absolute():
        raise UsageError(f"the spec folder {project} cannot be written as a relative POSIX "
                         f"path from {out}")
    return CompileOptions(project_dir=posix)


@dataclass(frozen=True)
class CompiledSpec:
    system: SystemIR
    tree: FileTree
    paths: SpecPaths
    warnings: tuple[Diagnostic, ...] = ()  # lint's warnings (errors stop the compile)


def compile_tree(spec: Path | str, out_dir: Path | str | None = None) -> CompiledSpec:
    """Lint + compile in memory (raises SpecError on spec errors). Nothing is written."""
    from mlstack.codegen.generate import compile_system
    from mlstack.frontend.analysis import require_system

    paths = spec_paths(spec, out_dir)
    system, analysis = require_system(paths.spec)
    return CompiledSpec(system, compile_system(system, compile_options(paths)), paths,
                        tuple(analysis.warnings))


def compile_spec(spec: Path | str, out_dir: Path | str | None = None, *, force: bool = False,
                 dry_run: bool = False) -> tuple[CompiledSpec, WriteResult]:
    """Compile a spec and write the tree (and its manifest) into the output folder."""
    compiled = compile_tree(spec, out_dir)
    result = write_tree(compiled.tree, compiled.paths.out_dir, system=compiled.system,
                        force=force, dry_run=dry_run)
    return compiled, result
