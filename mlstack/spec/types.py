"""Constrained scalar types of the spec: names, durations, gates, sizes.

Each validator raises a PydanticCustomError whose type is an mlstack error kind, so
`mlstack.spec.validate` can give it a stable diagnostic code.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SYSTEM_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
FEATURE_REF_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
DURATION_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
GATE_RE = re.compile(r"^\s*(>=|<=|>|<|==)?\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")
MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)(Mi|Gi|Ti)$")
CRON_FIELD_RE = re.compile(r"^[0-9*/,\-]+$")
SCHEDULE_ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")
RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | {
    "self", "cls", "None", "True", "False", "df", "np", "pd", "event_timestamp"
}


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise PydanticCustomError(
            "mls_name",
            "'{value}' is not a valid name: use lower-case letters, digits and '_', "
            "starting with a letter (at most 63 characters)",
            {"value": value[:80]},
        )
    if value in RESERVED:
        raise PydanticCustomError("mls_name", "'{value}' is a reserved word", {"value": value})
    return value


def _system_name(value: str) -> str:
    if not SYSTEM_NAME_RE.match(value):
        raise PydanticCustomError(
            "mls_name",
            "'{value}' is not a valid system name: lower-case letters, digits and '-', "
            "starting with a letter, at most 40 characters",
            {"value": value[:80]},
        )
    return value


def _column(value: str) -> str:
    if not COLUMN_RE.match(value) or value in RESERVED - {"event_timestamp"}:
        raise PydanticCustomError(
            "mls_name",
            "'{value}' is not a valid column name: letters, digits and '_', not starting "
            "with a digit, not a Python keyword",
            {"value": value[:80]},
        )
    return value


def _feature_ref(value: str) -> str:
    if not FEATURE_REF_RE.match(value):
        raise PydanticCustomError(
            "mls_name",
            "'{value}' is not a feature reference: write 'view.field' or a transform name",
            {"value": value[:80]},
        )
    return value


def duration_seconds(value: str | int) -> int:
    """'30d' -> 2592000; plain integers are seconds."""
    if isinstance(value, int):
        return value
    match = DURATION_RE.match(value.strip())
    if not match or not value.strip():
        raise ValueError(value)
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def _duration(value):
    if isinstance(value, bool):
        raise PydanticCustomError("mls_duration", "a duration is text like '15m', '2h' or '30d'")
    if isinstance(value, int):
        if value <= 0:
            raise PydanticCustomError("mls_duration", "a duration must be positive")
        return f"{value}s"
    if not isinstance(value, str):
        raise PydanticCustomError("mls_duration", "a duration is text like '15m', '2h' or '30d'")
    try:
        seconds = duration_seconds(value)
    except ValueError:
        raise PydanticCustomError(
            "mls_duration",
            "'{value}' is not a duration: use w, d, h, m, s units, e.g. '15m', '1h30m', '30d'",
            {"value": value[:80]},
        ) from None
    if seconds <= 0:
        raise PydanticCustomError("mls_duration", "a duration must be positive")
    return value


def parse_gate(value: str | float | int) -> tuple[str, float]:
    """'>= 0.80' -> ('>=', 0.8); a bare number means '>='."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ">=", float(value)
    match = GATE_RE.match(str(value))
    if not match:
        raise ValueError(value)
    return match.group(1) or ">=", float(match.group(2))


def _gate(value):
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError("mls_gate", "a gate is a comparison like '>= 0.80'")
    try:
        op, number = parse_gate(value)
    except ValueError:
        raise PydanticCustomError(
            "mls_gate",
            "'{value}' is not a gate: write an operator and a number, e.g. '>= 0.80' or '< 50'",
            {"value": str(value)[:80]},
        ) from None
    return f"{op} {number:g}" if isinstance(value, (int, float)) else str(value).strip()


def _memory(value):
    if not isinstance(value, str) or not MEMORY_RE.match(value):
        raise PydanticCustomError(
            "mls_quantity", "'{value}' is not a memory size: use Mi, Gi or Ti, e.g. '4Gi'",
            {"value": str(value)[:80]},
        )
    return value


def memory_mib(value: str) -> float:
    number, unit = MEMORY_RE.match(value).groups()
    return float(number) * {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}[unit]


def _schedule(value):
    if not isinstance(value, str):
        raise PydanticCustomError("mls_schedule", "a schedule is a cron line or '@daily'")
    text = value.strip()
    if text in SCHEDULE_ALIASES:
        return text
    fields = text.split()
    if len(fields) == 5 and all(CRON_FIELD_RE.match(f) for f in fields):
        return text
    raise PydanticCustomError(
        "mls_schedule",
        "'{value}' is not a schedule: use a 5-field cron line ('0 3 * * *') or one of {aliases}",
        {"value": value[:80], "aliases": ", ".join(SCHEDULE_ALIASES)},
    )


def _relative_path(value):
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("mls_path", "a path is non-empty text")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "~")) or ":" in parts[0] or ".." in parts or "\x00" in value:
        raise PydanticCustomError(
            "mls_path",
            "'{value}' must be a path relative to the spec's folder, without '..'",
            {"value": value[:80]},
        )
    return value


Name = Annotated[str, AfterValidator(_name), Field(json_schema_extra={"pattern": NAME_RE.pattern})]
SystemName = Annotated[str, AfterValidator(_system_name),
                       Field(json_schema_extra={"pattern": SYSTEM_NAME_RE.pattern})]
Column = Annotated[str, AfterValidator(_column),
                   Field(json_schema_extra={"pattern": COLUMN_RE.pattern})]
FeatureRef = Annotated[str, AfterValidator(_feature_ref)]
Duration = Annotated[str, BeforeValidator(_duration, json_schema_input_type=str | int),
                     Field(json_schema_extra={"pattern": DURATION_RE.pattern})]
Gate = Annotated[str, BeforeValidator(_gate, json_schema_input_type=str | float)]
Memory = Annotated[str, BeforeValidator(_memory, json_schema_input_type=str),
                   Field(json_schema_extra={"pattern": MEMORY_RE.pattern})]
Schedule = Annotated[str, BeforeValidator(_schedule, json_schema_input_type=str)]
RelativePath = Annotated[str, AfterValidator(_relative_path)]
DType = Literal["int64", "int32", "float64", "float32", "string", "bool", "timestamp"]
NUMERIC_DTYPES = ("int64", "int32", "float64", "float32", "bool")
