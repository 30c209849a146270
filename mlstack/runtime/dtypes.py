"""The dtype contract: does a column's type in a data file fit the dtype the spec declares?

One rule, judged on type names alone (pure Python, no library imported), so that `mlstack lint
--data` (which reads only a file's schema) and ingest (`read_source`, which reads the rows)
cannot disagree. A found type is named as `found_type` names it: int8..int64, uint8..uint64,
float16, float32, float64, bool, string, timestamp (with a zone), 'timestamp (no zone)', date,
null (a column with no value), or the file's own name for anything else.

    same    the found type is the declared one: read as it is
    widen   a lossless widening (int32 to int64, any int to float64, float32 to float64):
            cast to the declared dtype at ingest
    fit     a narrowing that is exact when the values fit (int64 to int32; CSV numbers, which
            have no width, to float32): ingest checks every value, then casts
    parse   text read as timestamps (a value that does not parse is named with its row)
    refuse  anything else: float to int, text to number, number to text in a typed file, ...

Nulls: an int64, int32 or bool column holds no nulls, in every format (pandas reads such a
column with nulls as float64 or object, so the model, Feast's staging and the service would
see another type than the declared one). Declare float64 to keep missing numbers. A timestamp
with no zone is read as UTC, and said so (a lint warning, a logged warning at ingest).
"""

from __future__ import annotations

import re

__all__ = ["NO_NULLS", "NO_ZONE", "found_type", "judge", "text_type"]

NO_ZONE = "timestamp (no zone)"
NO_NULLS = ("int64", "int32", "bool")
SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")
FLOATS = ("float16", "float32", "float64")
INT32_EXACT = ("int8", "int16", "int32", "uint8", "uint16")
INT64_EXACT = INT32_EXACT + ("int64", "uint32")
ARROW_NAMES = {"halffloat": "float16", "float": "float32", "double": "float64",
               "large_string": "string", "string_view": "string", "large_utf8": "string",
               "utf8": "string", "boolean": "bool"}
PANDAS_NAMES = {"object": "string", "str": "string", "boolean": "bool", "Int8": "int8",
                "Int16": "int16", "Int32": "int32", "Int64": "int64", "UInt8": "uint8",
                "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64",
                "Float32": "float32", "Float64": "float64"}


def found_type(name: str) -> str:
    """A pyarrow or pandas type name (str(type) / str(dtype)) as the contract names it."""
    name = name.strip()
    if name.startswith(("timestamp[", "datetime64[")):
        return "timestamp" if ("tz=" in name or "," in name) else NO_ZONE
    if name.startswith("date"):
        return "date"
    if name.startswith("dictionary<values=string") or name.startswith("dictionary<values=large"):
        return "string"
    if name.startswith("string[") or name == "category":  # pandas' string[python]/[pyarrow]
        return "string"
    return ARROW_NAMES.get(name) or PANDAS_NAMES.get(name) or name


def judge(declared: str, found: str, file_format: str) -> str:
    """same, widen, fit, parse or refuse (see the module's docstring). `found` is a
    found_type name; `file_format` is 'parquet' or 'csv' (CSV numbers have no width)."""
    csv = file_format == "csv"
    if found == declared:
        return "same"
    if found == "null":  # no value at all: the null rule decides for int and bool
        return "same"
    if declared == "int64":
        return "widen" if found in INT64_EXACT else "refuse"
    if declared == "int32":
        if found in INT32_EXACT:
            return "widen"
        return "fit" if found in ("int64", "uint32", "uint64") else "refuse"
    if declared == "float64":
        return "widen" if found in SIGNED + UNSIGNED + FLOATS else "refuse"
    if declared == "float32":
        if found in ("float16", "int8", "int16", "uint8", "uint16"):
            return "widen"
        return "fit" if csv and found in ("int64", "float64") else "refuse"
    if declared == "string":
        return "same" if csv else "refuse"  # CSV: every value is text
    if declared == "timestamp":
        return "parse" if found in ("string", NO_ZONE) else "refuse"
    return "refuse"


_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|nan)$",
                    re.IGNORECASE)
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?"
                    r"(?P<zone>\s*(Z|UTC|[-+]\d{2}:?\d{2}))?$")
_BOOLS = {"true", "false"}


def text_type(values: list[str]) -> tuple[str, int]:
    """(found type, nulls) of a CSV column's text values, as pandas would read them: integers
    as int64, other numbers as float64, True/False as bool, everything else as string (a
    timestamp column is text: 'timestamp' or NO_ZONE when every value is one). Empty is null."""
    present = [v.strip() for v in values if v.strip() != ""]
    nulls = len(values) - len(present)
    if not present:
        return "null", nulls
    if all(_INT.match(v) for v in present):
        return "int64", nulls
    if all(_INT.match(v) or _FLOAT.match(v) for v in present):
        return "float64", nulls
    if all(v.lower() in _BOOLS for v in present):
        return "bool", nulls
    stamps = [_STAMP.match(v) for v in present]
    if all(stamps):
        return ("timestamp" if all(m["zone"] for m in stamps if m) else NO_ZONE), nulls
    return "string", nulls
