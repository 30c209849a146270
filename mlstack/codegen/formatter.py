"""Format generated Python with a pinned formatter (ruff, pinned in pyproject.toml).

All files go through one `ruff format` call in a private temporary folder, with no user
configuration (`--isolated`), so the output depends only on the pinned ruff version.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from mlstack.diagnostics.errors import MlstackError

LINE_LENGTH = 88  # ruff's default: generated code passes the user's `ruff format --check`


def _ruff() -> str:
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError:  # pragma: no cover - ruff is a core dependency
        raise MlstackError("the ruff formatter is missing; reinstall mlstack") from None
    return str(find_ruff_bin())


def format_python(files: dict[str, bytes]) -> dict[str, bytes]:
    """{relative path: source} -> the same, formatted. Raises MlstackError on a syntax error
    (a bug in a template, never a user value: those enter generated code only as literals)."""
    if not files:
        return {}
    with tempfile.TemporaryDirectory(prefix="mlstack-fmt-") as tmp:
        root = Path(tmp)
        for i, (_path, content) in enumerate(sorted(files.items())):
            target = root / f"f{i:05d}.py"
            target.write_bytes(content)
        proc = subprocess.run(
            [_ruff(), "format", "--isolated", "--no-cache", f"--line-length={LINE_LENGTH}",
             "--target-version=py311", "--quiet", str(root)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            sys_msg = (proc.stderr or proc.stdout).strip().replace(str(root) + "/", "")
            raise MlstackError(f"formatting generated Python failed: {sys_msg}")
        return {path: (root / f"f{i:05d}.py").read_bytes()
                for i, (path, _content) in enumerate(sorted(files.items()))}



