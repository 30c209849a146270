"""Constrained scalar types of the spec: names, durations, gates, sizes.

Each validator raises a PydanticCustomError whose type is an mlstack error kind, so
`mlstack.frontend.spec.validate` can give it a stable diagnostic code and a plain message. Each type
also carries the JSON Schema fragment that says the same thing to editors.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SYSTEM_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
FEATURE_REF_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
METRIC_RE = re.compile(r"^[a-z][a-z0-9_]*(@[1-9][0-9]{0,2})?$")
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,200}$")
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
GPU_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
REGION_RE = re.compile(r"^[a-z]{2,}(-[a-z]+)+-?[0-9]{1,2}$")
NAMESPACE_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
DURATION_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
DURATION_JSON_PATTERN = r"^(?=[0-9])([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
GATE_RE = re.compile(r"^\s*(>=|<=|>|<|==)?\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")
GATE_JSON_PATTERN = r"^\s*(>=|<=|>|<|==)?\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$"
MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)(Mi|Gi|Ti)$")
CRON_FIELD_RE = re.compile(r"^[0-9*/,\-]+$")
# Where the Ray cluster is: 'local' (the local target starts one) or a Ray client address.
RAY_ADDRESS_RE = re.compile(r"^local$|^ray://[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?$")
SCHEDULE_ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")
# The numbers each cron field takes (leading zeros allowed), for the JSON Schema's pattern:
# minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-7
_CRON_NUMBERS = (r"0*[1-5]?[0-9]", r"0*(1?[0-9]|2[0-3])", r"0*([1-9]|[12][0-9]|3[01])",
                 r"0*([1-9]|1[0-2])", r"0*[0-7]")


def _cron_field_pattern(number: str) -> str:
    item = rf"(\*|({number})(-({number}))?)(/0*[1-9][0-9]*)?"
    return rf"{item}(,{item})*"


SCHEDULE_JSON_PATTERN = (r"^\s*(@hourly|@daily|@weekly|@monthly|@yearly|"
                         + r"\s+".join(_cron_field_pattern(n) for n in _CRON_NUMBERS)
                         + r")\s*$")
CODE_FUNCTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
CODE_REF_JSON_PATTERN = r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$"
RELATIVE_PATH_JSON_PATTERN = r"^(?![/~\\])(?![^/\\]*:)(?!(.*[/\\])?\.\.([/\\]|$))[^\u0000]+$"
RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | {
    "self", "cls", "None", "True", "False", "df", "np", "pd", "event_timestamp"
}


@dataclass(frozen=True)
class ValueType:
    """Marks a constrained type with the name and rule the docs give it (pydantic ignores it)."""

    name: str
    rule: str
    examples: tuple[str, ...] = ()


def _text(value: object) -> str:
    """A value as it may be quoted in a message: short, one line, printable (a control or
    surrogate character is written as its escape, so no value can move a terminal's cursor or
    fail to encode)."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise PydanticCustomError(
            "mls_name",
            "'{value}' is not a valid name: use lower-case letters, digits and '_', "
            "starting with a letter (at most 63 characters)",
            {"value": _text(value)},
        )
    if value in RESERVED:
        raise PydanticCustomError("mls_name", "'{value}' is a reserved word; choose another name",
                                  {"value": value})
    return value


def _system_name(value: str) -> str:
    if not SYSTEM_NAME_RE.match(value):
        raise PydanticCustomError(
            "mls_name",
            "'{value}' is not a valid system name: lower-case letters, digits and '-', "
            "starting with a letter, at most 40 characters",
            {"value": _text(value)},
        )
    return value


def _column(value: str) -> str:
    if not COLUMN_RE.match(value) or value in RESERVED - {"event_timestamp"}:
        raise PydanticCustomError(
            "mls_name",
            "'{value}' is not a valid column name: letters, digits and '_', not starting "
            "with a digit, not a Python keyword",
            {"value": _text(value)},
        )
    return value


def _matching(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    """A validator for text that must match `regex`; `what` says what it should look like."""

    def check(value: str) -> str:
        if not regex.match(value):
            raise PydanticCustomError("mls_name", "'{value}' is not " + what,
                                      {"value": _text(value)})
        return value

    return check


def duration_seconds(value: str | int) -> int:
    """'30d' -> 2592000; plain integers are seconds."""
    if isinstance(value, int):
        return value
    match = DURATION_RE.match(value.strip())
    if not match or not value.strip():
        raise ValueError(value)
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def _duration(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PydanticCustomError("mls_duration",
                                  "'{value}' is not a duration: write text like '15m', '2h' or "
                                  "'30d'", {"value": _text(value)})
    if isinstance(value, int):
        if value <= 0:
            raise PydanticCustomError("mls_duration", "a duration must be positive, not {value}",
                                      {"value": value})
        return f"{value}s"
    try:
        seconds = duration_seconds(value)
    except ValueError:
        raise PydanticCustomError(
            "mls_duration",
            "'{value}' is not a duration: use w, d, h, m, s units, e.g. '15m', '1h30m', '30d'",
            {"value": _text(value)},
        ) from None
    if seconds <= 0:
        raise PydanticCustomError("mls_duration", "a duration must be positive, not '{value}'",
                                  {"value": _text(value)})
    return value


def parse_gate(value: str | float | int) -> tuple[str, float]:
    """'>= 0.80' -> ('>=', 0.8); a bare number means '>='."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ">=", float(value)
    match = GATE_RE.match(str(value))
    if not match:
        raise ValueError(value)
    return match.group(1) or ">=", float(match.group(2))


def _gate(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError("mls_gate", "'{value}' is not a gate: write a comparison like "
                                  "'>= 0.80'", {"value": _text(value)})
    try:
        op, number = parse_gate(value)
    except ValueError:
        raise PydanticCustomError(
            "mls_gate",
            "'{value}' is not a gate: write an operator and a number, e.g. '>= 0.80' or '< 50'",
            {"value": _text(value)},
        ) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise PydanticCustomError("mls_gate", "a gate compares with a finite number")
    return f"{op} {number:g}" if isinstance(value, (int, float)) else str(value).strip()


def _memory(value: object) -> str:
    if not isinstance(value, str) or not MEMORY_RE.match(value):
        raise PydanticCustomError(
            "mls_quantity", "'{value}' is not a memory size: use Mi, Gi or Ti, e.g. '4Gi'",
            {"value": _text(value)},
        )
    if memory_mib(value) <= 0:
        raise PydanticCustomError("mls_quantity", "a memory size must be positive")
    return value


def memory_mib(value: str) -> float:
    number, unit = cast(re.Match[str], MEMORY_RE.match(value)).groups()
    return float(number) * {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}[unit]


def _schedule(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("mls_schedule", "'{value}' is not a schedule: write a cron "
                                  "line ('0 3 * * *') or '@daily'", {"value": _text(value)})
    text = value.strip()
    if text in SCHEDULE_ALIASES:
        return text
    fields = text.split()
    if len(fields) == 5 and all(CRON_FIELD_RE.match(f) for f in fields):
        for field, (name, low, high) in zip(fields, CRON_FIELDS, strict=True):
            problem = _cron_field_problem(field, low, high)
            if problem:
                raise PydanticCustomError(
                    "mls_schedule", "'{value}' is not a schedule: its {name} field '{field}' "
                    "{problem}", {"value": _text(value), "name": name, "field": field,
                                  "problem": problem})
        return text
    raise PydanticCustomError(
        "mls_schedule",
        "'{value}' is not a schedule: use a 5-field cron line ('0 3 * * *') or one of {aliases}",
        {"value": _text(value), "aliases": ", ".join(SCHEDULE_ALIASES)},
    )


# A cron line's fields: their names and the values each takes (day of week 7 is Sunday too)
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31),
               ("month", 1, 12), ("day-of-week", 0, 7))


def _cron_field_problem(field: str, low: int, high: int) -> str | None:
    """Why one cron field (digits, '*', '-', '/', ',' only) would not parse, or None:
    an empty list item, a value outside low..high, a range that runs backwards, a step
    of 0 or on a single value."""
    for item in field.split(","):
        head, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            return f"has the step '/{step}': a step is a whole number from 1"
        if head == "*":
            continue
        start, dash, end = head.partition("-")
        if not start.isdigit() or (dash and not end.isdigit()):
            return f"has '{item}': write a number, a range 'a-b', '*' or a step '*/n'"
        for number in (start, end) if dash else (start,):
            if not low <= int(number) <= high:
                return f"has {int(number)}: it takes {low} to {high}"
        if dash and int(start) > int(end):
            return f"has the range '{head}', which runs backwards"
    return None


def _relative_path(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("mls_path", "a path must not be empty")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "~", "\\")) or ":" in parts[0] or ".." in parts or "\x00" in value:
        raise PydanticCustomError(
            "mls_path",
            "'{value}' must be a path inside the spec's folder: relative, without '..'",
            {"value": _text(value)},
        )
    return value


def _code_ref(value: str) -> str:
    """'path.py:function': the shape only. Whether the path stays in the project, the file
    exists, parses and defines the function is checked by mlstack.frontend.usercode."""
    path, colon, function = value.rpartition(":")
    if not colon or not path.strip() or not CODE_FUNCTION_RE.match(function):
        raise PydanticCustomError(
            "mls_coderef", "'{value}' is not a code reference: write 'file.py:function'",
            {"value": _text(value), "hint": "a path, a colon and the function's name, e.g. "
             "'models.py:build_model'"})
    return value


def _range(value: Any) -> tuple[float, float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
        and abs(v) != float("inf") for v in value))
    if not ok:
        raise PydanticCustomError("mls_range", "a range is a pair of numbers [min, max], not "
                                  "{value}", {"value": _text(value)})
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise PydanticCustomError("mls_range", "the range [{low}, {high}] has min above max",
                                  {"low": f"{low:g}", "high": f"{high:g}"})
    return (low, high)


MAX_REGEX_CHARS = 200  # a data check's pattern; longer ones are rarely what was meant
# A repeat inside a group that repeats ('(a+)+', '(\\w*)*'): Python's regex engine can take
# exponential time on a value that almost matches, once per row.
NESTED_REPEAT_RE = re.compile(r"\((?:[^()\\]|\\.)*[+*}]\)[+*{]")


def _regex(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise PydanticCustomError("mls_regex", "a regex is a non-empty pattern in quotes, not "
                                  "{value}", {"value": _text(value)})
    if len(value) > MAX_REGEX_CHARS:
        raise PydanticCustomError("mls_regex", "the pattern is {length} characters long; at "
                                  "most {most} are allowed",
                                  {"length": len(value), "most": MAX_REGEX_CHARS})
    try:
        re.compile(value)
    except re.error as exc:
        raise PydanticCustomError("mls_regex", "'{value}' is not a regular expression: {error}",
                                  {"value": _text(value), "error": str(exc)}) from None
    if NESTED_REPEAT_RE.search(value):
        raise PydanticCustomError("mls_regex", "'{value}' repeats a group that repeats, which "
                                  "can take exponential time on a value that almost matches",
                                  {"value": _text(value)})
    return value


def _pattern_type(regex: re.Pattern[str], what: str, doc: ValueType) -> Any:
    schema = {"type": "string", "pattern": regex.pattern}
    return Annotated[str, AfterValidator(_matching(regex, what)), WithJsonSchema(schema), doc]


NAME_DOC = ValueType("name", "lower-case ASCII letters, digits and `_`, starting with a letter, "
                     "at most 63 characters, not a Python keyword; names become Python "
                     "identifiers, file names and resource names", ("customer", "churn_labels"))
Name = Annotated[str, AfterValidator(_name), Field(json_schema_extra={"pattern": NAME_RE.pattern}),
                 NAME_DOC]
SystemName = Annotated[str, AfterValidator(_system_name),
                       Field(json_schema_extra={"pattern": SYSTEM_NAME_RE.pattern}),
                       ValueType("system name", "lower-case ASCII letters, digits and `-`, "
                                 "starting with a letter, at most 40 characters",
                                 ("churn", "search-ranking"))]
Column = Annotated[str, AfterValidator(_column),
                   Field(json_schema_extra={"pattern": COLUMN_RE.pattern}),
                   ValueType("column", "ASCII letters, digits and `_`, not starting with a "
                             "digit, not a Python keyword", ("customer_id", "tenure_months"))]
FeatureRef = _pattern_type(FEATURE_REF_RE, "a feature reference: write 'view.field' or the name "
                           "of a transform", ValueType(
                               "feature reference", "`view.field`, or the name of a transform",
                               ("customer_profile.tenure_months", "charges_per_tenure")))
MetricName = _pattern_type(METRIC_RE, "a metric name: lower-case letters, digits and '_', "
                           "with '@k' for ranking metrics (e.g. 'auc', 'ndcg@10')", ValueType(
                               "metric", "a metric name; ranking metrics take `@k`",
                               ("auc", "f1", "rmse", "ndcg@10")))
TableName = _pattern_type(TABLE_RE, "a table name: letters, digits, '_' and '.' "
                          "(e.g. 'analytics.events')", ValueType(
                              "table", "letters, digits, `_` and `.`", ("analytics.events",)))
TopicName = _pattern_type(TOPIC_RE, "a topic name: letters, digits, '.', '_' and '-'",
                          ValueType("topic", "letters, digits, `.`, `_` and `-`",
                                    ("clicks.v1",)))
GpuType = _pattern_type(GPU_TYPE_RE, "a GPU type: lower-case letters, digits, '.' and '-' "
                        "(e.g. 'nvidia-l4')", ValueType(
                            "GPU type", "lower-case letters, digits, `.` and `-`",
                            ("nvidia-l4", "nvidia-a10g")))
Region = _pattern_type(REGION_RE, "a cloud region such as 'us-east-1' or 'europe-west4'",
                       ValueType("region", "a cloud region", ("us-east-1", "europe-west4")))
Namespace = _pattern_type(NAMESPACE_RE, "a Kubernetes namespace: lower-case letters, digits "
                          "and '-', at most 63 characters", ValueType(
                              "namespace", "a Kubernetes namespace: lower-case letters, digits "
                              "and `-`", ("ml-prod",)))
RayAddress = _pattern_type(RAY_ADDRESS_RE, "a Ray address: 'local' or 'ray://host:port' (the "
                           "Ray client port, 10001 by default)", ValueType(
                               "Ray address", "`local`, or `ray://host:port`",
                               ("local", "ray://ray-head.ml:10001")))
Duration = Annotated[str, BeforeValidator(_duration), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": DURATION_JSON_PATTERN},
              {"type": "integer", "minimum": 1}],
    "description": "A duration: w, d, h, m, s units (e.g. '15m', '1h30m', '30d') or seconds."}),
    ValueType("duration", "a number with a unit (w, d, h, m, s), units in that order, or a "
              "positive number of seconds",
              ("15m", "1h30m", "30d", "3600"))]
Gate = Annotated[str, BeforeValidator(_gate), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": GATE_JSON_PATTERN}, {"type": "number"}],
    "description": "A comparison such as '>= 0.80' or '< 50'; a bare number means '>='."}),
    ValueType("gate", "an operator (`>=`, `<=`, `>`, `<`, `==`) and a number; a bare number "
              "means `>=`", ("\">= 0.80\"", "\"> 50\"", "0.8"))]
Memory = Annotated[str, BeforeValidator(_memory), WithJsonSchema({
    "type": "string", "pattern": MEMORY_RE.pattern,
    "description": "A memory size in Mi, Gi or Ti, e.g. '4Gi'."}),
    ValueType("memory", "a size in Mi, Gi or Ti", ("512Mi", "4Gi"))]
Schedule = Annotated[str, BeforeValidator(_schedule), WithJsonSchema({
    "type": "string", "pattern": SCHEDULE_JSON_PATTERN,
    "description": "A 5-field cron line ('0 3 * * *') or @hourly, @daily, @weekly, @monthly, "
                   "@yearly."}),
    ValueType("schedule", "a 5-field cron line, or @hourly, @daily, @weekly, @monthly, @yearly",
              ("\"@daily\"", "\"0 3 * * *\""))]
RelativePath = Annotated[str, AfterValidator(_relative_path), WithJsonSchema({
    "type": "string", "pattern": RELATIVE_PATH_JSON_PATTERN,
    "description": "A path relative to the spec's folder, without '..'."}),
    ValueType("path", "relative to the spec's folder; no absolute paths, `..`, drive letters or "
              "URLs", ("data/customers.parquet",))]
CodeRef = Annotated[str, Field(max_length=500), AfterValidator(_code_ref), WithJsonSchema({
    "type": "string", "pattern": CODE_REF_JSON_PATTERN, "maxLength": 500,
    "description": "A function in a Python file of the project: 'file.py:function'."}),
    ValueType("code reference", "`file.py:function`: a Python file relative to the spec's "
              "folder (no absolute paths or `..`) and a function defined at its top level",
              ("models.py:build_model", "features.py:ratio"))]
Range = Annotated[tuple[float, float], BeforeValidator(_range), WithJsonSchema({
    "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
    "description": "Inclusive [min, max]."}),
    ValueType("range", "two numbers `[min, max]`, min not above max", ("[0, 600]",))]
Regex = Annotated[str, BeforeValidator(_regex), WithJsonSchema({
    "type": "string", "minLength": 1, "maxLength": MAX_REGEX_CHARS, "format": "regex",
    "description": "A Python regular expression every value must match in full."}),
    ValueType("regex", f"a Python regular expression in quotes, at most {MAX_REGEX_CHARS} "
              "characters, with no repeated group that itself repeats (`(a+)+`); a value "
              "matches when the whole value matches", ("'^[A-Z]{2}-[0-9]{4}$'", "'[a-z_]+'"))]
DType = Literal["int64", "int32", "float64", "float32", "string", "bool", "timestamp"]
NUMERIC_DTYPES = ("int64", "int32", "float64", "float32", "bool")
