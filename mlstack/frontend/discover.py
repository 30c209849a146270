"""Which spec files a lint run covers, from the paths it was given (as ruff and dbt find theirs).

- a file is linted as given, whatever its name;
- a folder is searched for `mlstack.yaml` / `mlstack.yml` at any depth. Inside a git work tree
  the search is git's own (`git ls-files`: tracked files and untracked ones `.gitignore` does
  not exclude); elsewhere, or when git finds none, it walks the folder. Either way it never enters a virtual
  environment, `build/` (compiled output), `.mlstack/` (deploy state), `node_modules/` or a
  tool's cache;
- a glob pattern (`'*/mlstack.yaml'`, `'**/mlstack.yaml'`; quoted, so the shell leaves it) is
  expanded here, `**` spanning folders; a folder it matches is searched as above.

A path that yields nothing is reported, not raised: one bad argument must not hide the
findings of the others (`Missing`, which lint turns into an MLS012 finding).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SPEC_NAMES = ("mlstack.yaml", "mlstack.yml")
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "build", ".mlstack", "node_modules",
                       "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
                       ".ruff_cache"})
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Missing:
    """An argument that names no spec: it does not exist, or a folder or pattern finds none."""

    given: str
    message: str
    hint: str | None = None


def _skipped(path: Path, root: Path | None = None) -> bool:
    """Inside a folder the search never enters (relative to `root` when given)."""
    parts = path.relative_to(root).parts[:-1] if root is not None else path.parts[:-1]
    return any(part in SKIP_DIRS for part in parts)


def _is_venv(folder: Path) -> bool:
    return (folder / "pyvenv.cfg").is_file()


def _walk(root: Path) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not _is_venv(here / d))
        found += [here / name for name in sorted(files) if name in SPEC_NAMES]
    return found


def _git(args: Sequence[str], cwd: Path, stdin: str | None = None) -> tuple[int, str]:
    """(exit code, stdout) of a git command; (-1, "") when git cannot run here."""
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        return -1, ""
    try:
        proc = subprocess.run([git, *args], cwd=cwd, input=stdin, capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return -1, ""
    return proc.returncode, proc.stdout


def _git_specs(root: Path) -> list[Path] | None:
    """The specs under `root` that git does not ignore; None outside a git work tree."""
    patterns = [f"*{name}" for name in SPEC_NAMES]
    code, out = _git(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                      *patterns], root)
    if code != 0:
        return None
    files = {root / rel for rel in out.split("\0") if rel}
    return sorted(p for p in files if p.name in SPEC_NAMES and p.is_file()
                  and not _skipped(p, root) and not any(_is_venv(d) for d in
                                                        _between(root, p)))


def _between(root: Path, path: Path) -> Iterable[Path]:
    """The folders from `root` (excluded) down to `path`'s folder."""
    folder = path.parent
    while folder != root and root in folder.parents:
        yield folder
        folder = folder.parent


def _git_ignored(paths: list[Path]) -> set[Path]:
    """Those of `paths` that .gitignore excludes (tracked files never are)."""
    if not paths:
        return set()
    code, out = _git(["check-ignore", "-z", "--stdin"], Path.cwd(),
                     stdin="\0".join(str(p) for p in paths) + "\0")
    if code not in (0, 1):  # 1: none ignored; 128: not in a work tree
        return set()
    return {Path(p) for p in out.split("\0") if p}


def search_folder(folder: Path) -> list[Path]:
    """The specs in `folder`, at any depth. A folder whose specs git ignores every one of (say
    one named on purpose inside an ignored folder) is walked instead: it was asked for."""
    return _git_specs(folder) or _walk(folder)


def _expand_glob(pattern: str) -> list[Path]:
    import glob

    matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
    matches = [m for m in matches if not _skipped(m) and not any(
        _is_venv(parent) for parent in m.parents)]
    ignored = _git_ignored(matches)
    return [m for m in matches if m not in ignored]


def _is_glob(given: str) -> bool:
    return any(ch in GLOB_CHARS for ch in given) and not Path(given).exists()


def find_specs(paths: Sequence[str]) -> list[Path | Missing]:
    """The spec files the paths name, in the order given (each once), and a `Missing` for
    each path that names none."""
    out: list[Path | Missing] = []
    seen: set[Path] = set()

    def add(found: list[Path]) -> None:
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                out.append(path)

    for given in paths:
        path = Path(given)
        if _is_glob(given):
            found: list[Path] = []
            for match in _expand_glob(given):
                found += search_folder(match) if match.is_dir() else [match]
            if not found:
                out.append(Missing(given, f"no spec file matches the pattern '{given}'",
                                   "check the pattern, and quote it so that mlstack gets it "
                                   "as written (a folder it matches is searched for "
                                   "mlstack.yaml)"))
            add(found)
        elif path.is_dir():
            found = search_folder(path)
            if not found:
                where = "the current folder" if given in (".", "./") else f"{given}"
                out.append(Missing(given, f"no mlstack.yaml in {where} or below",
                                   "pass spec files or folders holding one, or create a project "
                                   "with 'mlstack init' (.gitignore'd folders, build/, .mlstack/ "
                                   "and virtual environments are not searched)"))
            add(found)
        elif path.exists() or path.is_symlink():
            add([path])  # a file (or a dangling link): analyze_spec reports what is wrong
        else:
            out.append(Missing(given, "no such file or folder"))
    return out
