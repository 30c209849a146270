"""The Jinja environment every backend renders with.

Templates are trusted source; user values reach generated files only through filters that
emit literals (`py`, `json`, `yaml`) or validated identifiers (`ident`). StrictUndefined
turns a missing context value into an error instead of an empty string.
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
    env.filters.update(py=py_literal, json=json_literal, yaml=yaml_scalar, ident=identifier)
    return env


def render_template(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
