"""User code: functions in the project's own Python files, checked by parsing, never imported.

A spec may name `file.py:function` (an estimator factory, a python transform). Lint reads the
file and parses it with `ast`; nothing of it runs at lint time. The checks, in order, each a
`UserCodeProblem` with a stable code:

- MLS602 the path leaves the project folder (absolute, `..`, a drive or URL, a symlink out);
- MLS604 the path is not a Python module file (`.py`, each part an identifier: it becomes a
  module of the generated package);
- MLS603 the file does not exist (or is not a regular file);
- MLS605 the file cannot be read as Python (not UTF-8, too large, a syntax error);
- MLS608 the file imports the project's other modules (relative imports, or a sibling
  module), which the generated package would not have: only the named file is copied;
- MLS606 the function is not a `def` at the module's top level (did-you-mean);
- MLS607 its signature does not take what the spec passes (`positional_fit`,
  `keyword_fit`).
"""

from __future__ import annotations

import ast
import hashlib
import keyword
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlstack.diagnostics.diagnostic import did_you_mean

MAX_BYTES = 1_000_000  # a user file larger than this is refused (MLS605)


@dataclass(frozen=True)
class UserCodeProblem(Exception):
    code: str
    message: str
    hint: str | None = None
    line: int | None = None  # in the user file, when the problem is at one place of it
    param: str | None = None  # the model parameter it is about (located at that key)


@dataclass(frozen=True)
class UserFile:
    path: str  # relative to the project folder, POSIX
    module: str  # dotted, relative to the project: 'src.features'
    text: str
    sha256: str
    tree: ast.Module


def split_ref(ref: str) -> tuple[str, str]:
    """'src/features.py:ratio' -> ('src/features.py', 'ratio') (the shape is validated)."""
    path, _, function = ref.rpartition(":")
    return path.strip(), function


def module_name(path: str) -> str:
    """The module a checked user file becomes: 'src/features.py' -> 'src.features'."""
    return ".".join(PurePosixPath(path).with_suffix("").parts)


def _check_path(path: str) -> str:
    """The path as a clean relative POSIX path inside the project, or a problem."""
    if "\\" in path or "\x00" in path or path.startswith(("/", "~")) or (
            ":" in path.split("/")[0]):
        raise UserCodeProblem("MLS602", f"'{_shown(path)}' is not a path inside the project "
                              "folder", "write the path relative to the spec's folder, with "
                              "'/' between folders")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserCodeProblem("MLS602", f"'{_shown(path)}' leaves the project folder ('..')",
                              "keep your code in the spec's folder (or below it)")
    if not parts:
        raise UserCodeProblem("MLS604", "the code reference names no file",
                              "write 'file.py:function'")
    clean = "/".join(parts)
    if not clean.endswith(".py"):
        raise UserCodeProblem("MLS604", f"'{_shown(clean)}' is not a Python file (.py)",
                              "name a .py file of the project: 'models.py:build_model'")
    names = [*parts[:-1], parts[-1].removesuffix(".py")]
    for name in names:
        if not name.isidentifier() or not name.isascii() or keyword.iskeyword(name) or (
                "__" in name):
            raise UserCodeProblem(
                "MLS604", f"'{_shown(clean)}' is not a Python module name: '{_shown(name)}' "
                "is not an identifier (ASCII letters, digits and '_', no '__', not a keyword)",
                "rename the file or folder, e.g. 'my_features.py'; the file becomes a module "
                "of the generated package")
    return clean


def _shown(text: str) -> str:
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
    return text if len(text) <= 80 else text[:77] + "..."


def read_user_file(project_dir: Path, path: str) -> UserFile:
    """Check and parse a user file named in the spec (relative to `project_dir`)."""
    clean = _check_path(path)
    root = project_dir.resolve()
    full = root / clean
    try:
        real = full.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise UserCodeProblem("MLS603", f"{clean} cannot be resolved (a symlink loop?)",
                              "name a regular file") from None
    if not real.is_relative_to(root):
        raise UserCodeProblem("MLS602", f"{clean} leaves the project folder through a "
                              "symlink", "copy the file into the project folder")
    if not real.exists():
        near = sorted(p.name for p in real.parent.glob("*.py")) if real.parent.is_dir() else []
        raise UserCodeProblem("MLS603", f"{clean}: no such file in the project folder",
                              did_you_mean(real.name, near) or
                              "paths are relative to the spec's folder")
    if not real.is_file():
        raise UserCodeProblem("MLS603", f"{clean} is not a regular file",
                              "name a .py file, not a folder")
    try:
        with real.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UserCodeProblem("MLS603", f"{clean} cannot be read "
                              f"({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        raise UserCodeProblem("MLS605", f"{clean} is larger than {MAX_BYTES // 1_000_000} MB",
                              "keep the code mlstack copies small: models and transforms")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserCodeProblem("MLS605", f"{clean} is not UTF-8 text (byte {exc.start})",
                              "save the file as UTF-8") from None
    try:
        tree = ast.parse(text, filename=clean)
    except SyntaxError as exc:
        where = f"{clean}:{exc.lineno or 1}:{exc.offset or 1}"
        raise UserCodeProblem("MLS605", f"{where}: {exc.msg}", "fix the Python syntax "
                              "error", exc.lineno) from None
    except ValueError as exc:  # a NUL byte
        raise UserCodeProblem("MLS605", f"{clean} does not parse: {exc}",
                              "save the file as plain Python text") from None
    return UserFile(path=clean, module=module_name(clean), text=text,
                    sha256=hashlib.sha256(data).hexdigest(), tree=tree)


def local_imports(user: UserFile, project_dir: Path) -> None:
    """Refuse imports of the project's own modules: only the named file is copied into the
    generated package, so `from . import x` or `import helpers` (a file beside it) would
    fail at run time."""
    root = project_dir.resolve()
    folders = {root, (root / user.path).parent}
    for node in ast.walk(user.tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise UserCodeProblem(
                    "MLS608", f"{user.path}:{node.lineno}: a relative import ('from "
                    f"{'.' * node.level}{node.module or ''} import ...'); only {user.path} is "
                    "copied into the generated code", "put what it imports in the same file",
                    node.lineno)
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            top = name.split(".")[0]
            if top and any((folder / f"{top}.py").is_file() or (folder / top).is_dir()
                           for folder in folders):
                raise UserCodeProblem(
                    "MLS608", f"{user.path}:{node.lineno}: imports '{top}', a module of the "
                    f"project folder; only {user.path} is copied into the generated code",
                    "put what it needs in the same file (or install it as a package)",
                    node.lineno)


def find_function(user: UserFile, name: str) -> ast.FunctionDef:
    """The last top-level `def name` of the file (the one Python would bind)."""
    found = None
    for node in user.tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            found = node
    if found is not None:
        return found
    for node in user.tree.body:
        bound = _binds(node, name)
        if bound:
            raise UserCodeProblem(
                "MLS606", f"'{name}' in {user.path}:{node.lineno} is {bound}, not a function "
                "defined with def at the top level", _wrap_hint(name), node.lineno)
    for inner in ast.walk(user.tree):
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef) and inner.name == name:
            raise UserCodeProblem(
                "MLS606", f"'{name}' is defined at {user.path}:{inner.lineno} inside another "
                "block, not at the top level of the module", "move the def to the top level "
                "(no indentation)", inner.lineno)
    defined = [n.name for n in user.tree.body if isinstance(n, ast.FunctionDef)]
    raise UserCodeProblem("MLS606", f"{user.path} defines no function '{name}'",
                          did_you_mean(name, defined) or (
                              "functions defined there: " + ", ".join(sorted(defined))
                              if defined else f"add 'def {name}(...):' to {user.path}"))


def _wrap_hint(name: str) -> str:
    return f"name a function that builds it, e.g. def build(**params): return {name}(**params)"


def _binds(node: ast.stmt, name: str) -> str | None:
    """What a top-level statement binds `name` to, in words (None: it does not)."""
    if isinstance(node, ast.AsyncFunctionDef) and node.name == name:
        return "an async function (it would return a coroutine)"
    if isinstance(node, ast.ClassDef) and node.name == name:
        return "a class"
    if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name.split(".")[0]) == name for a in node.names):
        return "an imported name"
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name) and sub.id == name:
                return "an assigned value"
    return None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _signature(fn: ast.FunctionDef) -> str:
    return f"def {fn.name}({ast.unparse(fn.args)})"


def positional_fit(user: UserFile, fn: ast.FunctionDef, count: int) -> None:
    """The function can be called with `count` positional arguments and nothing else."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)
    where = f"{user.path}:{fn.lineno}: {_signature(fn)}"
    if required > count:
        missing = ", ".join(a.arg for a in positional[count:required])
        raise UserCodeProblem("MLS607", f"{where} needs {_count(required, 'argument')} but "
                              f"the transform has {_count(count, 'input')} (nothing is passed for "
                              f"{missing})", "list one input per argument, in order, or give "
                              "the extra arguments defaults", fn.lineno)
    if len(positional) < count and args.vararg is None:
        raise UserCodeProblem("MLS607", f"{where} takes {_count(len(positional), 'argument')} "
                              f"but the transform has {_count(count, 'input')}", "add an argument per input "
                              "(the inputs are passed positionally, in order)", fn.lineno)
    kw_required = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                   if d is None]
    if kw_required:
        raise UserCodeProblem("MLS607", f"{where} needs the keyword-only arguments "
                              f"{', '.join(kw_required)}, which a transform cannot pass",
                              "give them defaults", fn.lineno)


def keyword_fit(user: UserFile, fn: ast.FunctionDef, names: list[str]) -> None:
    """The function takes `names` as keyword arguments and needs nothing else."""
    args = fn.args
    where = f"{user.path}:{fn.lineno}: {_signature(fn)}"
    by_keyword = [a.arg for a in (*args.args, *args.kwonlyargs)]
    for name in names:
        if name not in by_keyword and args.kwarg is None:
            hint = did_you_mean(name, by_keyword) or (
                f"it accepts {', '.join(by_keyword)}" if by_keyword else
                f"add '{name}' (or **params) to its arguments")
            raise UserCodeProblem("MLS607", f"{where} does not accept the parameter "
                                  f"'{name}'", hint, fn.lineno, param=name)
    positional = [*args.posonlyargs, *args.args]
    required = positional[:len(positional) - len(args.defaults)]
    posonly_required = [a for a in required if a in args.posonlyargs]
    if posonly_required:
        raise UserCodeProblem(
            "MLS607", f"{where} needs positional-only arguments "
            f"({', '.join(a.arg for a in posonly_required)}); the factory is called with "
            "model.params as keywords only", "remove the '/' or give them defaults",
            fn.lineno)
    required_kw = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                   if d is None]
    missing = [a.arg for a in required if a.arg not in names] + [
        a for a in required_kw if a not in names]
    if missing:
        raise UserCodeProblem(
            "MLS607", f"{where} needs {', '.join(missing)}, which model.params does not "
            "give", f"add {missing[0]} to model.params, or give it a default", fn.lineno)


def accepts_keyword(fn: ast.FunctionDef, name: str) -> bool:
    """The function names `name` as an argument that can be passed by keyword."""
    return name in {a.arg for a in (*fn.args.args, *fn.args.kwonlyargs)}
