"""Validate a loaded document against the spec models; turn pydantic errors into Diagnostics.

Each pydantic error becomes one diagnostic with a stable code, a plain message (no pydantic
wording), the location of the offending token and, where one helps, a hint.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from mlstack.diagnostics.diagnostic import Diagnostic, Severity, did_you_mean, hint_for
from mlstack.frontend.loader import LoadedDocument, Path_
from mlstack.frontend.spec import messages
from mlstack.frontend.spec.models import (
    API_VERSION,
    FileSource,
    StreamSource,
    SystemSpec,
    WarehouseSource,
)

ERROR_CODES = {
    "extra_forbidden": "MLS101",
    "missing": "MLS102",
    "union_tag_not_found": "MLS102",
    "mls_missing": "MLS102",
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
    "mls_coderef": "MLS601",
    "mls_replicas": "MLS502",
}
SOURCE_KINDS = tuple(kind for model in (FileSource, WarehouseSource, StreamSource)
                     for kind in typing.get_args(model.model_fields["kind"].annotation))


# a spec model class, or ("dict", the annotation of a mapping's values)
ModelSlot = type[BaseModel] | tuple[str, Any]


def _unwrap(annotation: Any) -> list[ModelSlot]:
    """The model classes an annotation may hold (through Optional/Union/list/dict/Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found: list[ModelSlot] = []
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


def _models_at(loc: Path_, data: Any) -> list[type[BaseModel]]:
    """The spec model classes that describe the mapping at `loc` (for did-you-mean hints)."""
    current: list[ModelSlot] = [SystemSpec]
    node = data
    for part in loc:
        nxt: list[ModelSlot] = []
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
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
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


def _field_names(models: Iterable[type[BaseModel]]) -> list[str]:
    names = []
    for model in models:
        for name, info in model.model_fields.items():
            names.append(info.alias or name)
    return names


def _field_info(models: Iterable[type[BaseModel]], key: str) -> FieldInfo | None:
    for model in models:
        for name, info in model.model_fields.items():
            if key in (name, info.alias):
                return info
    return None


def _data_path(loc: Path_, data: Any) -> Path_:
    """Map a pydantic loc onto the document: drop union-member/tag segments it does not hold."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # pydantic's union-member / validator segment
        elif isinstance(node, dict) and isinstance(part, str) and node.get("kind") == part:
            continue  # the tag of a discriminated union member
        elif i == len(loc) - 1:
            path.append(part)  # a missing key (or tuple item): located at its parent
        elif isinstance(node, dict) and isinstance(part, str):
            path.append(part)  # a key that is not there (e.g. inside a missing parent)
            node = None
        else:
            continue
    return tuple(path)


def pointer(path: Path_) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _display(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the document"


def _diagnostic(err: ErrorDetails, doc: LoadedDocument) -> tuple[Diagnostic, str | None]:
    """One pydantic error as a Diagnostic, and (for unknown keys) the key it suggests."""
    kind = err["type"]
    path = _data_path(tuple(err["loc"]), doc.data)
    if kind == "extra_forbidden":
        return _unknown_key(path, doc)
    if kind == "union_tag_not_found" or (kind == "missing" and not (
            path and isinstance(path[-1], int))):
        return _missing_key(err, path, doc), None
    if kind == "missing":  # an item missing from a fixed-length list
        location = doc.source_map.locate(path[:-1])
        return Diagnostic("MLS103", Severity.ERROR, f"{_display(path[:-1])}: too few values",
                          location, None, pointer(path[:-1])), None
    return _bad_value(err, path, doc), None


def _unknown_key(path: Path_, doc: LoadedDocument) -> tuple[Diagnostic, str | None]:
    key = path[-1]
    known = _field_names(_models_at(path[:-1], doc.data))
    close = did_you_mean(key, known)
    return Diagnostic("MLS101", Severity.ERROR, f"unknown key '{key}' in {_display(path[:-1])}",
                      doc.source_map.locate(path, key=True),
                      hint_for(key, known) if known else None,
                      pointer(path)), (close.split("'")[1] if close else None)


def _missing_key(err: ErrorDetails, path: Path_, doc: LoadedDocument) -> Diagnostic:
    tag = err["type"] == "union_tag_not_found"
    parent = path if tag else path[:-1]
    field = str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'") if tag else (
        str(path[-1]))
    hint: str | None
    if field == "apiVersion":
        hint = f"add 'apiVersion: {API_VERSION}' at the top"
    elif tag:
        hint = f"add '{field}:' with one of: {', '.join(SOURCE_KINDS)}"
    else:
        hint = messages.missing_hint(field, _field_info(_models_at(parent, doc.data), field))
    return Diagnostic("MLS102", Severity.ERROR, f"missing required key '{field}' in "
                      f"{_display(parent)}", doc.source_map.locate(parent, key=True), hint,
                      pointer(path))


def _bad_value(err: ErrorDetails, path: Path_, doc: LoadedDocument) -> Diagnostic:
    kind = err["type"]
    smap = doc.source_map
    ctx = err.get("ctx") or {}
    code = ERROR_CODES.get(kind, "MLS103")
    at = ctx.get("at")
    if kind == "union_tag_invalid":
        path = path + ("kind",)
    elif at and smap.has(path + (at,)):
        path = path + (at,)  # a model-level check names the key it is about
    elif path and not smap.has(path):
        path = path[:-1]  # e.g. a shorthand ('batching: fast') checked as a sub-field
    where = _display(path)
    location = smap.locate(path)
    text = messages.plain_message(err)
    message = f"{where} {text}" if text.startswith(messages.PREDICATE_WORDS) else f"{where}: {text}"
    hint = ctx.get("hint") or messages.input_hint(err) or messages.CUSTOM_HINTS.get(kind)
    given = err.get("input")
    if kind == "literal_error":
        options = messages.options(ctx.get("expected", ""))
        synonym = messages.SYNONYMS.get(str(given).strip().lower())
        hint = (f"did you mean '{synonym}'?" if synonym in options
                else did_you_mean(str(given), options))
        if path and path[-1] == "apiVersion" and "input" in err:
            code = "MLS105"
            message = f"apiVersion {messages.describe_value(given)} is not supported"
            hint = f"this mlstack reads '{API_VERSION}'"
    elif kind == "union_tag_invalid":
        given = ctx.get("tag", given)
        message = f"{where}: unknown kind '{given}'"
        hint = hint_for(str(given), messages.options(ctx.get("expected_tags", "")))
    elif kind == "mls_name":
        hint = messages.name_hint(given)
    elif kind in ("mls_duration", "mls_quantity", "mls_schedule"):
        hint = messages.unit_hint(kind, given)
    elif kind == "mls_expr":
        location = smap.locate_inside(path, _expr_offset(doc, path, ctx.get("column", 1)))
        hint = messages.EXPR_HINT
    return Diagnostic(code, Severity.ERROR, message, location, hint, pointer(path))


def _expr_offset(doc: LoadedDocument, path: Path_, column: int) -> int:
    """Offset inside the written scalar of the 1-based `column` of the stripped expression."""
    node: Any = doc.data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return column - 1
    text = node if isinstance(node, str) else ""
    return len(text) - len(text.lstrip()) + column - 1


def validate_document(doc: LoadedDocument) -> tuple[SystemSpec | None, list[Diagnostic]]:
    try:
        return SystemSpec.model_validate(doc.data), []
    except ValidationError as exc:
        found: list[tuple[Diagnostic, str | None]] = []
        seen: dict[tuple[str, str], int] = {}
        for err in exc.errors(include_url=False):
            diag, suggestion = _diagnostic(err, doc)
            key = (diag.pointer, diag.code)
            if key in seen:  # union members: one diagnostic per spot, naming every option
                _merge_alternatives(found, seen[key], diag)
                continue
            seen[key] = len(found)
            found.append((diag, suggestion))
        suggested = {(d.pointer.rsplit("/", 1)[0], s) for d, s in found if s}
        diagnostics = [d for d, _ in found if not (
            d.code == "MLS102" and d.message.startswith("missing required key")
            and (d.pointer.rsplit("/", 1)[0], d.pointer.rsplit("/", 1)[-1]) in suggested)]
        diagnostics.sort(key=Diagnostic.sort_key)
        return None, diagnostics


def _merge_alternatives(found: list[tuple[Diagnostic, str | None]], index: int,
                        other: Diagnostic) -> None:
    """'expected text, got 5' + 'expected a list, got 5' -> 'expected text or a list, got 5'."""
    first, suggestion = found[index]
    a, b = first.message.partition(": expected ")[2], other.message.partition(": expected ")[2]
    if not a or not b:
        return
    what_a, _, got = a.partition(", got ")
    what_b = b.partition(", got ")[0]
    if what_b in what_a.split(" or "):
        return
    prefix = first.message.partition(": expected ")[0]
    merged = f"{prefix}: expected {what_a} or {what_b}, got {got}"
    found[index] = (Diagnostic(first.code, first.severity, merged, first.location, first.hint,
                               first.pointer), suggestion)
