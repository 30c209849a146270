"""The back half of the compiler: IR -> FileTree, through every backend that applies."""

from __future__ import annotations

from mlstack.codegen.backends import REGISTRY, CompileOptions, load_backend
from mlstack.codegen.contract import user_code_paths
from mlstack.codegen.filetree import FileTree
from mlstack.codegen.formatter import format_python
from mlstack.frontend.ir.nodes import SystemIR


def compile_system(system: SystemIR, options: CompileOptions | None = None) -> FileTree:
    """Render every applicable backend. Pure: no files are read or written here."""
    options = options or CompileOptions()
    tree = FileTree()
    for name in REGISTRY:
        backend = load_backend(name)
        if backend.applies(system):
            tree.update(backend.render(system, options))
    copied = user_code_paths(system)  # the user's files: copied as written, not formatted
    formatted = format_python({p: c for p, c in tree.items()
                               if p.endswith(".py") and p not in copied})
    result = FileTree()
    for path, content in tree.items():
        result.add(path, formatted.get(path, content))
    return result
