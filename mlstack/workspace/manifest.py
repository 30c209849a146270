"""The manifest, `mlstack.lock.json`: what the last compile wrote into an output folder.

It records the mlstack version, the spec file and its hash, the sha256 of every generated
file (so the writer can tell a file the user edited from one it may replace), and the
resolved IR (so `mlstack plan` can diff resources against the last compile). It is written
by the writer, last, never by a backend. Its bytes are deterministic: sorted keys, indent 2,
LF endings, no timestamps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from mlstack import __version__
from mlstack.codegen.contract import MANIFEST_FILE
from mlstack.codegen.filetree import FileTree, check_relative
from mlstack.diagnostics.errors import MlstackError
from mlstack.frontend.ir.nodes import SystemIR

MANIFEST_NAME = MANIFEST_FILE
MANIFEST_FORMAT = 1


class ManifestError(MlstackError):
    """The manifest in an output folder cannot be read (exit 1)."""

    exit_code = 1
    code = "manifest_error"


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class Manifest:
    files: dict[str, str]  # relative POSIX path -> sha256 of the bytes written
    spec_file: str | None = None
    spec_hash: str | None = None
    system: dict | None = field(default=None, compare=False)  # SystemIR as JSON data
    mlstack_version: str = __version__

    def to_bytes(self) -> bytes:
        data = {"format": MANIFEST_FORMAT, "mlstack_version": self.mlstack_version,
                "spec_file": self.spec_file, "spec_hash": self.spec_hash,
                "files": dict(sorted(self.files.items())), "system": self.system}
        return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()

    def previous_system(self) -> SystemIR | None:
        """The IR of the compile that wrote this manifest, or None when it is absent or was
        written by an mlstack whose IR no longer validates (plan then diffs files only)."""
        if self.system is None:
            return None
        try:
            return SystemIR.model_validate(self.system)
        except ValueError:
            return None


def build_manifest(tree: FileTree, system: SystemIR | None = None) -> Manifest:
    if MANIFEST_NAME in tree:
        raise ValueError(f"a backend generated {MANIFEST_NAME}")  # a bug, not a user mistake
    return Manifest(
        files={path: sha256(content) for path, content in tree.items()},
        spec_file=system.spec_file if system else None,
        spec_hash=system.spec_hash if system else None,
        system=system.model_dump(mode="json") if system else None)


def parse_manifest(content: bytes, where: str = MANIFEST_NAME) -> Manifest:
    hint = "delete it (or compile with --force) to start over"
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where} is not valid JSON: {exc}", hint) from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ManifestError(f"{where} is not an mlstack manifest (no 'files' mapping)", hint)
    files: dict[str, str] = {}
    for path, digest in data["files"].items():
        if not isinstance(digest, str):
            raise ManifestError(f"{where}: the hash of {path!r} is not a string", hint)
        files[check_relative(path)] = digest
    return Manifest(files=files, spec_file=data.get("spec_file"),
                    spec_hash=data.get("spec_hash"), system=data.get("system"),
                    mlstack_version=str(data.get("mlstack_version", "unknown")))


def read_manifest(out_dir: Path | str) -> Manifest | None:
    """The manifest of an output folder, or None when the folder has none."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ManifestError(f"{path} is a folder, not a manifest") from None
    return parse_manifest(content, str(path))
