"""Plain words for what went wrong: pydantic errors as messages without pydantic's wording,
and the hints that go with them (did you mean '7d'? write the number without quotes, ...)."""

from __future__ import annotations

import re
import typing
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlstack.diagnostics.diagnostic import did_you_mean
from mlstack.frontend.expr import FUNCTIONS
from mlstack.frontend.spec.types import SCHEDULE_ALIASES

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

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
EXPR_HINT = ("a transform is written with numbers, view fields, + - * / // % **, "
             "comparisons, and/or/not, and the functions " + ", ".join(sorted(FUNCTIONS)))



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


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plain_message(err: Mapping[str, Any]) -> str:
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
        return f"{describe_value(given)} is not one of: {choices(ctx.get('expected', ''))}"
    return str(err["msg"])


def choices(expected: str) -> str:
    return ", ".join(o for o in options(expected))


def options(expected: str) -> list[str]:
    return [o.strip(" '\"") for o in str(expected).replace(" or ", ",").split(",") if o.strip()]


def input_hint(err: Mapping[str, Any]) -> str | None:
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


def missing_hint(field: str, info: FieldInfo | None) -> str | None:
    if info is None:
        return None
    allowed = typing.get_args(info.annotation) if typing.get_origin(
        info.annotation) is typing.Literal else ()
    if len(allowed) == 1:
        return f"add '{field}: {allowed[0]}'"
    if allowed:
        return f"add '{field}:' with one of: {', '.join(map(str, allowed))}"
    return f"add '{field}': {info.description}" if info.description else None


def name_hint(value: Any) -> str | None:
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


def unit_hint(kind: str, value: Any) -> str | None:
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
