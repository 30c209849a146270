"""Validate a loaded document against the spec models; turn pydantic errors into Diagnostics.

Each pydantic error becomes one diagnostic with a stable code, a plain message (no pydantic
wording), the location of the offending token and, where one helps, a hint.
"""

from __future__ import annotations

import re
import types
import typing
import unicodedata
from typing import Any

from pydantic import BaseModel, ValidationError

from mlstack.diagnostics import Diagnostic, Severity, did_you_mean, hint_for
from mlstack.expr import FUNCTIONS
from mlstack.loader import LoadedDocument
from mlstack.spec.models import API_VERSION, FileSource, StreamSource, SystemSpec, WarehouseSource
from mlstack.spec.types import SCHEDULE_ALIASES

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
    "mls_replicas": "MLS502",
}
EXPECTED = {  # pydantic type-error kind -> what the spec expected, in plain words
    "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "text",
    "list_type": "a list", "tuple_type": "a list", "set_type": "a list",
    "dict_type": "a mapping of keys", "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys", "none_required": "nothing",
}
BOUNDS = {"greater_than": ("gt", "greater than"), "greater_than_equal": ("ge", "at least"),
          "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}
INPUT_HINT_KINDS = ("int_type", "float_type", "bool_type")
SOURCE_KINDS = tuple(kind for model in (FileSource, WarehouseSource, StreamSource)
                     for kind in typing.get_args(model.model_fields["kind"].annotation))
PREDICATE_WORDS = ("must ", "is ", "needs ", "takes ")
SYNONYMS = {  # words people write for a choice the spec spells differently
    "int": "int64", "integer": "int64", "long": "int64", "float": "float64",
    "double": "float64", "number": "float64", "str": "string", "text": "string",
    "boolean": "bool", "datetime": "timestamp", "date": "timestamp",
    "binary": "binary_classification", "classification": "binary_classification",
    "multiclass": "multiclass_classification", "k8s": "kubernetes", "http": "rest",
}
DURATION_WORDS = {"w": "w", "week": "w", "weeks": "w", "d": "d", "day": "d", "days": "d",
                  "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h", "m": "m",
                  "min": "m", "mins": "m", "minute": "m", "minutes": "m", "s": "s",
                  "sec": "s", "secs": "s", "second": "s", "seconds": "s"}
MEMORY_WORDS = {"m": "Mi", "mb": "Mi", "mib": "Mi", "g": "Gi", "gb": "Gi", "gib": "Gi",
                "t": "Ti", "tb": "Ti", "tib": "Ti"}
CUSTOM_HINTS = {
    "mls_replicas": "make replicas.min at most replicas.max",
    "mls_missing": "add 'table: schema.table' or 'query: SELECT ...'",
}
EXPR_HINT = ("a transform is written with numbers, view fields, + - * / // % **, comparisons, "
             "and/or/not, and the functions " + ", ".join(sorted(FUNCTIONS)))


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


def _field_names(models) -> list[str]:
    names = []
    for model in models:
        for name, info in model.model_fields.items():
            names.append(info.alias or name)
    return names


def _field_info(models, key: str):
    for model in models:
        for name, info in model.model_fields.items():
            if key in (name, info.alias):
                return info
    return None


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


def pointer(path: tuple) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _display(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the document"


def describe_value(value: Any) -> str:
    """A value the user wrote, as a message quotes it."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value:g}" if isinstance(value, float) else f"the number {value}"
    if isinstance(value, str):
        text = value.replace("\n", "\\n")
        return f"'{text[:60]}...'" if len(text) > 60 else f"'{text}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain_message(err: dict) -> str:
    """The pydantic error in plain words (without the location prefix)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind in EXPECTED:
        return f"expected {EXPECTED[kind]}, got {describe_value(given)}"
    if kind in BOUNDS:
        key, words = BOUNDS[kind]
        return f"must be {words} {_number(ctx.get(key))}, got {describe_value(given)}"
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"needs at least {least} items"
    if kind == "too_long":
        most = ctx.get("max_length")
        return f"takes at most {most} item{'s' if most != 1 else ''}, got " \
               f"{ctx.get('actual_length')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"{describe_value(given)} is not one of: {_choices(ctx.get('expected', ''))}"
    return err["msg"]


def _choices(expected: str) -> str:
    return ", ".join(o for o in _options(expected))


def _options(expected: str) -> list[str]:
    return [o.strip(" '\"") for o in str(expected).replace(" or ", ",").split(",") if o.strip()]


def _input_hint(err: dict) -> str | None:
    given = err.get("input")
    if err["type"] in INPUT_HINT_KINDS and isinstance(given, str):
        stripped = given.strip().lower()
        if stripped in ("true", "false"):
            return "write true or false without quotes"
        if stripped in ("yes", "no", "on", "off"):
            return "write true or false"
        try:
            float(stripped)
            return "write the number without quotes"
        except ValueError:
            return None
    return None


def _diagnostic(err: dict, doc: LoadedDocument) -> tuple[Diagnostic, str | None]:
    """One pydantic error as a Diagnostic, and (for unknown keys) the key it suggests."""
    kind = err["type"]
    loc = tuple(err["loc"])
    path = _data_path(loc, doc.data)
    smap = doc.source_map
    code = ERROR_CODES.get(kind, "MLS103")
    ctx = err.get("ctx") or {}
    hint = None
    suggestion = None
    if kind == "extra_forbidden":
        key = path[-1]
        location = smap.locate(path, key=True)
        known = _field_names(_models_at(path[:-1], doc.data))
        message = f"unknown key '{key}' in {_display(path[:-1])}"
        hint = hint_for(key, known) if known else None
        close = did_you_mean(key, known)
        suggestion = close.split("'")[1] if close else None
    elif kind == "union_tag_not_found" or (kind == "missing" and not (
            path and isinstance(path[-1], int))):
        parent = path[:-1] if kind == "missing" else path
        field = path[-1] if kind == "missing" else str(ctx.get("discriminator", "kind")).strip("'")
        location = smap.locate(parent, key=True)
        message = f"missing required key '{field}' in {_display(parent)}"
        if field == "apiVersion":
            hint = f"add 'apiVersion: {API_VERSION}' at the top"
        elif kind == "union_tag_not_found":
            hint = f"add '{field}:' with one of: {', '.join(SOURCE_KINDS)}"
        else:
            hint = _missing_hint(str(field), _field_info(_models_at(parent, doc.data),
                                                         str(field)))
    elif kind == "missing":  # an item missing from a fixed-length list
        code = "MLS103"
        path = path[:-1]
        location = smap.locate(path)
        message = f"{_display(path)}: too few values"
    else:
        at = ctx.get("at")
        if kind == "union_tag_invalid":
            path = path + ("kind",)
        elif at and smap.has(path + (at,)):
            path = path + (at,)
        elif path and not smap.has(path):
            path = path[:-1]  # e.g. a shorthand ('batching: fast') checked as a sub-field
        where = _display(path)
        location = smap.locate(path)
        text = _plain_message(err)
        message = f"{where} {text}" if text.startswith(PREDICATE_WORDS) else f"{where}: {text}"
        hint = _input_hint(err) or CUSTOM_HINTS.get(kind)
        if kind == "literal_error":
            given = err.get("input")
            options = _options(ctx.get("expected", ""))
            synonym = SYNONYMS.get(str(given).strip().lower())
            hint = (f"did you mean '{synonym}'?" if synonym in options
                    else did_you_mean(str(given), options))
            if path and path[-1] == "apiVersion" and "input" in err:
                code = "MLS105"
                message = f"apiVersion {describe_value(err['input'])} is not supported"
                hint = f"this mlstack reads '{API_VERSION}'"
        elif kind == "union_tag_invalid":
            given = ctx.get("tag", err.get("input"))
            message = f"{where}: unknown kind '{given}'"
            hint = hint_for(str(given), _options(ctx.get("expected_tags", "")))
        elif kind == "mls_name":
            hint = _name_hint(err.get("input"))
        elif kind in ("mls_duration", "mls_quantity", "mls_schedule"):
            hint = _unit_hint(kind, err.get("input"))
        elif kind == "mls_expr":
            location = smap.locate_inside(path, _expr_offset(doc, path, ctx.get("column", 1)))
            hint = EXPR_HINT
    return Diagnostic(code, Severity.ERROR, message, location, hint, pointer(path)), suggestion


def _missing_hint(field: str, info) -> str | None:
    if info is None:
        return None
    choices = typing.get_args(info.annotation) if typing.get_origin(
        info.annotation) is typing.Literal else ()
    if len(choices) == 1:
        return f"add '{field}: {choices[0]}'"
    if choices:
        return f"add '{field}:' with one of: {', '.join(map(str, choices))}"
    return f"add '{field}': {info.description}" if info.description else None


def _name_hint(value: Any) -> str | None:
    """For a name that looks right but is not: point at the character that is wrong."""
    if not isinstance(value, str):
        return None
    for char in value:
        if ord(char) > 127:
            name = unicodedata.name(char, "an unnamed character")
            return (f"'{char}' (U+{ord(char):04X} {name}) is not an ASCII letter; "
                    "retype the name")
    if value != value.lower() and value.lower().replace("-", "_").isidentifier():
        return f"did you mean '{value.lower()}'?"
    return None


def _unit_hint(kind: str, value: Any) -> str | None:
    """'7days' -> did you mean '7d'?; '4GB' -> '4Gi'; '@dialy' -> '@daily'."""
    if not isinstance(value, str):
        return None
    if kind == "mls_schedule":
        return did_you_mean(value.strip(), SCHEDULE_ALIASES)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", value)
    if not match:
        return None
    number, unit = match.groups()
    words = DURATION_WORDS if kind == "mls_duration" else MEMORY_WORDS
    fixed = words.get(unit.lower())
    if fixed is None or (kind == "mls_duration" and "." in number):
        return None
    return f"did you mean '{number}{fixed}'?"


def _expr_offset(doc: LoadedDocument, path: tuple, column: int) -> int:
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
        seen: dict[tuple, int] = {}
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


def _merge_alternatives(found: list, index: int, other: Diagnostic) -> None:
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
