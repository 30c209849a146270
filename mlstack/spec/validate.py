"""Validate a loaded document against the spec models; turn pydantic errors into Diagnostics."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from mlstack.diagnostics import Diagnostic, Severity, hint_for
from mlstack.loader import LoadedDocument
from mlstack.spec.models import API_VERSION, SystemSpec

ERROR_CODES = {
    "extra_forbidden": "MLS101",
    "missing": "MLS102",
    "union_tag_not_found": "MLS102",
    "literal_error": "MLS104",
    "enum": "MLS104",
    "union_tag_invalid": "MLS104",
    "mls_duration": "MLS106",
    "mls_name": "MLS107",
    "string_pattern_mismatch": "MLS107",
    "mls_expr": "MLS108",
    "mls_gate": "MLS109",
    "mls_schedule": "MLS110",
    "mls_quantity": "MLS111",
    "mls_path": "MLS112",
}


def _unwrap(annotation) -> list:
    """The model classes an annotation may hold (through Optional/Union/list/dict/Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found = []
        for arg in typing.get_args(annotation):
            found.extend(_unwrap(arg))
        return found
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return _unwrap(args[0]) if args else []
    if origin is dict:
        return [("dict", typing.get_args(annotation)[1])]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _models_at(loc: tuple, data: Any) -> list[type[BaseModel]]:
    """The spec model classes that describe the mapping at `loc` (for did-you-mean hints)."""
    current: list = [SystemSpec]
    node = data
    for part in loc:
        nxt: list = []
        for model in current:
            if isinstance(model, tuple):  # dict value type
                if isinstance(part, str):
                    nxt.extend(_unwrap(model[1]))
                continue
            if isinstance(part, int):
                nxt.append(model)
                continue
            for name, info in model.model_fields.items():
                if part in (name, info.alias):
                    nxt.extend(_unwrap(info.annotation))
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        # a discriminated union: keep only the member whose tag matches what was written
        if isinstance(node, dict) and "kind" in node and len(nxt) > 1:
            narrowed = []
            for model in nxt:
                kind = getattr(model, "model_fields", {}).get("kind")
                if kind is not None and node["kind"] in typing.get_args(kind.annotation):
                    narrowed.append(model)
            nxt = narrowed or nxt
        current = nxt
    return [m for m in current if not isinstance(m, tuple)]


def _field_names(models) -> list[str]:
    names = []
    for model in models:
        for name, info in model.model_fields.items():
            names.append(info.alias or name)
    return names


def _data_path(loc: tuple, data: Any) -> tuple:
    """Map a pydantic loc onto the document: drop union-member/tag segments it does not hold."""
    path: list = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif i == len(loc) - 1:
            path.append(part)  # a missing key: located at its parent
        elif isinstance(node, dict) and isinstance(part, str) and ("[" in part or part in (
                "parquet", "csv", "postgres", "bigquery", "snowflake", "redshift", "kafka",
                "kinesis", "function-before", "function-after")):
            continue  # pydantic's union-member segment
        elif isinstance(node, dict) and isinstance(part, str):
            path.append(part)  # a key that is not there (e.g. inside a missing parent)
            node = None
        else:
            continue
    return tuple(path)


def pointer(path: tuple) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _display(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _diagnostic(err: dict, doc: LoadedDocument) -> Diagnostic:
    kind = err["type"]
    loc = tuple(err["loc"])
    path = _data_path(loc, doc.data)
    smap = doc.source_map
    code = ERROR_CODES.get(kind, "MLS103")
    hint = None
    where = _display(path)
    if kind == "extra_forbidden":
        key = path[-1]
        location = smap.locate(path, key=True)
        known = _field_names(_models_at(path[:-1], doc.data))
        message = f"unknown key '{key}' in {_display(path[:-1])}"
        hint = hint_for(key, known) if known else None
    elif kind in ("missing", "union_tag_not_found"):
        location = smap.locate(path[:-1] if kind == "missing" else path)
        field = path[-1] if kind == "missing" else err.get("ctx", {}).get("discriminator", "kind")
        parent = _display(path[:-1] if kind == "missing" else path)
        message = f"missing required key {str(field)!r} in {parent}"
        if field == "apiVersion":
            hint = f"add 'apiVersion: {API_VERSION}' at the top"
    else:
        if kind == "union_tag_invalid":
            path = path + ("kind",)
        elif path and not smap.has(path):
            path = path[:-1]  # e.g. a shorthand ('batching: fast') checked as a sub-field
        where = _display(path)
        location = smap.locate(path)
        message = f"{where}: {err['msg']}"
        if kind in ("literal_error", "union_tag_invalid"):
            ctx = err.get("ctx", {})
            expected = ctx.get("expected", ctx.get("expected_tags", ""))
            options = [o.strip(" '\"") for o in str(expected).replace(" or ", ",").split(",")]
            given = ctx.get("tag", err.get("input"))
            if kind == "union_tag_invalid":
                message = f"{where}: unknown kind '{given}'"
            hint = hint_for(str(given), [o for o in options if o])
            if path and path[-1] == "apiVersion" and "input" in err:
                code = "MLS105"
                message = f"apiVersion '{err['input']}' is not supported"
                hint = f"this mlstack reads '{API_VERSION}'"
        if kind == "mls_expr":
            column = err.get("ctx", {}).get("column", 1)
            text_line = smap.lines[location.line - 1] if location.line <= len(smap.lines) else ""
            offset = 1 if text_line[location.column - 1:location.column] in ("'", '"') else 0
            location = type(location)(location.file, location.line,
                                      location.column + offset + column - 1)
            hint = "use numbers, view fields, + - * / // % **, comparisons, and/or/not, " \
                   "and abs sqrt log log1p exp floor ceil min max clip where"
    return Diagnostic(code, Severity.ERROR, message, location, hint, pointer(path))


def validate_document(doc: LoadedDocument) -> tuple[SystemSpec | None, list[Diagnostic]]:
    try:
        return SystemSpec.model_validate(doc.data), []
    except ValidationError as exc:
        seen = set()
        diagnostics = []
        for err in exc.errors(include_url=False):
            diag = _diagnostic(err, doc)
            key = (diag.pointer, diag.code)
            if key in seen:
                continue
            seen.add(key)
            diagnostics.append(diag)
        diagnostics.sort(key=Diagnostic.sort_key)
        return None, diagnostics
