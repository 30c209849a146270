"""The Jinja environment every backend renders with.

Templates are trusted source; user values reach generated files only through filters that
emit literals (`py`, `json`, `yaml`, `yaml_text`) or validated identifiers (`ident`).
StrictUndefined turns a missing context value into an error instead of an empty string.
"""

from __future__ import annotations

import functools
import json
import re

import jinja2

from mlstack.codegen.package_data import templates_dir

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def py_literal(value) -> str:
    """A deterministic Python literal (tuples/lists/dicts/str/numbers/bool/None)."""
    if isinstance(value, dict):
        items = ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in sorted(value.items()))
        return "{" + items + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(py_literal(v) for v in value)
        if isinstance(value, tuple):
            return "(" + inner + ("," if len(value) == 1 else "") + ")"
        return "[" + inner + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} as a Python literal")


def json_literal(value) -> str:
    return json.dumps(value, sort_keys=True)


def yaml_scalar(value) -> str:
    """A YAML scalar that reads back as exactly `value` (JSON is valid YAML flow style)."""
    return json.dumps(value)


def yaml_text(value: str, column: int, indent: int = 2, width: int = 80) -> str:
    """`yaml_scalar`, wrapped to stay within `width` columns (yamllint's default line length)
    when it starts at `column` and its continuation lines are indented by `indent`: a
    double-quoted scalar folds each line break back into one space, so it breaks only at
    single spaces between two other characters (JSON escapes never contain one). A word too
    long for a line keeps its line."""
    text = json.dumps(value)
    words: list[str] = []
    pieces = text.split(" ")
    for piece in pieces:  # a run of spaces, or a lone quote, glues to its neighbours
        if words and (piece in ("", '"') or words[-1] in ("", '"') or words[-1].endswith(" ")):
            words[-1] += " " + piece
        else:
            words.append(piece)
    lines, room = [words[0]], width - column
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) <= room:
            lines[-1] += " " + word
        else:
            lines.append(word)
            room = width - indent
    return ("\n" + " " * indent).join(lines)


def identifier(value: str) -> str:
    if not isinstance(value, str) or not IDENT_RE.match(value):
        raise ValueError(f"not an identifier: {value!r}")  # the spec validators prevent this
    return value


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(py=py_literal, json=json_literal, yaml=yaml_scalar, yaml_text=yaml_text,
                       ident=identifier)
    return env


def render_template(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
