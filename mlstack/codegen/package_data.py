"""Where the bundled templates, blueprints and schemas live.

In a wheel they are package data under mlstack/_data/; in a source checkout (editable
install) they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # the mlstack package


def data_root() -> Path:
    bundled = _PACKAGE / "_data"
    return bundled if bundled.is_dir() else _PACKAGE.parent


def templates_dir() -> Path:
    return data_root() / "templates"


def blueprints_dir() -> Path:
    return data_root() / "blueprints"


def schemas_dir() -> Path:
    return data_root() / "schemas"
