"""FileTree: the compiler's output, {relative posix path: bytes}, before anything is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from mlstack.diagnostics.errors import MlstackError


class UnsafePathError(MlstackError):
    exit_code = 1
    code = "unsafe_path"


def check_relative(path: str) -> str:
    """A path inside the output root: relative, POSIX, no '..', no empty parts."""
    p = PurePosixPath(path)
    if (not path or p.is_absolute() or "\\" in path or any(part in ("..", ".", "")
                                                           for part in path.split("/"))):
        raise UnsafePathError(f"refusing to write outside the output folder: {path!r}")
    return str(p)


class FileTree:
    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}

    def add(self, path: str, content: str | bytes) -> None:
        path = check_relative(path)
        if path in self._files:
            raise ValueError(f"two backends generate {path}")  # a bug, not a user mistake
        if isinstance(content, str):
            content = content.encode("utf-8")
        self._files[path] = content.replace(b"\r\n", b"\n")

    def update(self, other: FileTree) -> None:
        for path, content in other.items():
            self.add(path, content)

    def items(self) -> Iterator[tuple[str, bytes]]:
        for path in sorted(self._files):
            yield path, self._files[path]

    def paths(self) -> list[str]:
        return sorted(self._files)

    def __getitem__(self, path: str) -> bytes:
        return self._files[path]

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def __len__(self) -> int:
        return len(self._files)

    def as_dict(self) -> dict[str, bytes]:
        return dict(self.items())
