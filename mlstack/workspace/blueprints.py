"""Bundled blueprints and `mlstack init`: scaffold a project from one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath

from mlstack.codegen.package_data import blueprints_dir, schemas_dir
from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.schema import SCHEMA_FILE

SPEC_FILE = "mlstack.yaml"
MODELINE_RE = re.compile(r"^# yaml-language-server: \$schema=.*$", re.M)
SKIP = {"__pycache__", ".state", "build"}
GITIGNORE = ".gitignore"
# What a project keeps out of version control: the compiled tree and the deploy state.
IGNORED = ("build/", ".mlstack/")


@dataclass(frozen=True)
class Blueprint:
    name: str
    path: Path
    summary: str


def list_blueprints() -> list[Blueprint]:
    root = blueprints_dir()
    found = []
    for spec in sorted(root.glob(f"*/{SPEC_FILE}")):
        readme = spec.parent / "README.md"
        summary = readme_summary(readme.read_text()) if readme.is_file() else ""
        found.append(Blueprint(spec.parent.name, spec.parent, summary))
    return found


def readme_summary(text: str) -> str:
    """A README's first paragraph after its title, on one line: whole sentences as written,
    never a line cut out of the middle of one."""
    paragraph: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            if paragraph:
                break
            continue
        if not paragraph and stripped.startswith("#"):
            continue
        paragraph.append(stripped)
    return " ".join(paragraph)


def get_blueprint(name: str) -> Blueprint:
    from mlstack.diagnostics.diagnostic import hint_for

    blueprints = {b.name: b for b in list_blueprints()}
    if name not in blueprints:
        raise UsageError(f"no blueprint named '{name}'", hint_for(name, blueprints))
    return blueprints[name]


@dataclass(frozen=True)
class InitResult:
    directory: Path
    blueprint: str
    files: tuple[str, ...]
    # how the sample data was dated: moved to the present, or why it kept its dates
    dated: str = ""
    dated_now: bool = False


def init_project(directory: Path, blueprint: str, force: bool = False) -> InitResult:
    """Copy a blueprint (spec, data, README) into `directory`; point its modeline at a local
    copy of the JSON Schema; write a .gitignore for build/ and .mlstack/ (added to one that is
    there already). Refuses a non-empty folder unless `force`.

    The blueprint is staged in a fresh temporary folder of its own (so nothing that was
    already on disk is ever removed) and every place it writes is checked before the first
    write: a symbolic link inside `directory` (say `mlstack.yaml` or `data/` linking out of
    the folder) is refused, never written through, and so is a folder where a file goes or a
    file where a folder goes. Each file is written next to its place and renamed over it, so
    an existing file's other hard links keep their content."""
    bp = get_blueprint(blueprint)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise UsageError(f"{directory} is not empty", "choose an empty folder or pass --force")
    with tempfile.TemporaryDirectory(prefix="mlstack-init-") as tmp:
        staging = Path(tmp) / "project"
        shutil.copytree(bp.path, staging, ignore=shutil.ignore_patterns(*SKIP))
        spec = staging / SPEC_FILE
        text = MODELINE_RE.sub(f"# yaml-language-server: $schema={SCHEMA_FILE}", spec.read_text())
        spec.write_text(text)
        shutil.copyfile(schemas_dir() / SCHEMA_FILE, staging / SCHEMA_FILE)
        (staging / GITIGNORE).write_text(gitignore_text(directory / GITIGNORE))
        dated_now, dated = date_sample(staging)
        entries = sorted(staging.rglob("*"))
        for src in entries:
            _check_destination(directory, src.relative_to(staging), src.is_dir())
        directory.mkdir(parents=True, exist_ok=True)
        files = []
        for src in entries:
            rel = src.relative_to(staging)
            dest = directory / rel
            if src.is_dir():
                dest.mkdir(exist_ok=True)
                _check_destination(directory, rel, True)  # not swapped for a link meanwhile
                continue
            _check_destination(directory, rel.parent, True)
            _replace_file(src, dest)
            files.append(rel.as_posix())
    return InitResult(directory, bp.name, tuple(sorted(files)), dated, dated_now)


REDATE_COMMAND = "python -m mlstack.runtime.sources redate data"


def date_sample(project: Path) -> tuple[bool, str]:
    """Move a staged blueprint's sample to the present: one offset for every timestamp of its
    parquet files under data/, so that the newest feature row is now (a feature view's TTL
    and the freshness SLO count from it; intervals between rows are kept). The runtime does
    it (pandas; the compiler never imports it) in a child process; without the runtime extra
    the sample keeps its dates. Returns (moved?, what happened, for the user)."""
    from mlstack.frontend.analysis import analyze_spec

    data = project / "data"
    if not any(data.glob("*.parquet")):
        return False, ""
    system = analyze_spec(project / SPEC_FILE).system
    # a file source's path (a warehouse or stream source has none)
    anchors = sorted({path for v in system.feature_views
                      if (path := system.source(v.source).path) is not None}
                     if system is not None else set())
    command = [sys.executable, "-m", "mlstack.runtime.sources", "redate", str(data)]
    for path in anchors:
        if (project / path).parent == data and path.endswith(".parquet"):
            command += ["--anchor", str(project / path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    if done.returncode == 0:
        return True, "the sample data is dated to now (its newest feature row)"
    missing = "No module named" in done.stderr
    why = ("the runtime extra is not installed" if missing
           else (done.stderr.strip().splitlines() or ["failed"])[-1])
    return False, (f"the sample data keeps its dates ({why}); before deploying, move it to "
                   f"the present with `{REDATE_COMMAND}`")


def gitignore_text(existing: Path) -> str:
    """The project's .gitignore: an existing one with what it lacks of IGNORED appended (its
    own lines kept as they are), else IGNORED alone. A link is not read (init refuses it)."""
    text = ""
    if existing.is_file() and not existing.is_symlink():
        text = existing.read_text(encoding="utf-8", errors="replace")
    have = {line.strip().strip("/") for line in text.splitlines()}
    missing = [entry for entry in IGNORED if entry.strip("/") not in have]
    if not missing:
        return text
    block = "# mlstack: the compiled stack and local deploy state\n" + "\n".join(missing) + "\n"
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + block


def _check_destination(directory: Path, rel: PurePath, is_dir: bool) -> None:
    """Refuse a destination reached through a symbolic link, or of the wrong kind."""
    parts = rel.parts
    for i in range(1, len(parts) + 1):
        path = directory.joinpath(*parts[:i])
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link; init does not write through links",
                             "remove the link, or choose another folder")
        if not path.exists():
            return
        want_dir = is_dir or i < len(parts)
        if want_dir and not path.is_dir():
            raise UsageError(f"{path} is in the way: the blueprint has a folder there",
                             "move it away, or choose another folder")
        if not want_dir and not path.is_file():
            raise UsageError(f"{path} is in the way: the blueprint has a file there",
                             "move it away, or choose another folder")


def _replace_file(src: Path, dest: Path) -> None:
    """Write `src`'s bytes at `dest` by a rename in `dest`'s folder: a link at `dest` (made
    after the check) is replaced, not followed, and other hard links keep their content."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(src.read_bytes())
        os.chmod(tmp, 0o666 & ~_umask())  # what a plain create gives (mkstemp gives 0600)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
