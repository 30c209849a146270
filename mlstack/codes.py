"""Every diagnostic code mlstack emits: stable, documented (docs/diagnostics.md is generated)."""

from __future__ import annotations

CODES: dict[str, str] = {
    # loading (MLS0xx)
    "MLS001": "The spec file cannot be read",
    "MLS002": "The file is not valid UTF-8",
    "MLS003": "The file starts with a byte-order mark",
    "MLS004": "Tab character in indentation",
    "MLS005": "The spec is empty",
    "MLS006": "The document is not a single mapping",
    "MLS007": "Duplicate key",
    "MLS008": "YAML anchors, aliases and merge keys are refused",
    "MLS009": "The spec file is too large",
    "MLS010": "The document is nested too deeply",
    "MLS011": "YAML syntax error",
    # schema (MLS1xx)
    "MLS101": "Unknown key",
    "MLS102": "Missing required key",
    "MLS103": "Wrong type or value",
    "MLS104": "Value is not one of the allowed choices",
    "MLS105": "Unsupported apiVersion",
    "MLS106": "Invalid duration",
    "MLS107": "Invalid name",
    "MLS108": "Invalid transform expression",
    "MLS109": "Invalid gate",
    "MLS110": "Invalid schedule",
    "MLS111": "Invalid resource quantity",
    "MLS112": "Path escapes the project folder",
    # references (MLS2xx)
    "MLS201": "Unknown entity",
    "MLS202": "Unknown source",
    "MLS203": "Column not declared by the source",
    "MLS204": "Unknown feature reference",
    "MLS205": "Label does not resolve",
    "MLS206": "Duplicate name",
    "MLS207": "Join key missing from a source",
    "MLS208": "Ambiguous or invalid transform input",
    "MLS209": "Incompatible type",
    "MLS210": "Timestamp field not declared",
    # model and evaluation (MLS3xx)
    "MLS301": "Metric does not fit the task",
    "MLS302": "Gate on a metric that is not evaluated",
    "MLS303": "Unknown algorithm",
    "MLS304": "Framework not supported yet",
    "MLS305": "Unknown model parameter",
    "MLS306": "Label type does not fit the task",
    # SLOs and serving (MLS4xx)
    "MLS401": "Latency percentiles out of order",
    "MLS402": "Batching budget does not fit in the p99 budget",
    "MLS403": "Feature TTL shorter than the freshness SLO",
    "MLS404": "Model staleness shorter than the training schedule",
    "MLS405": "Quality SLO on a metric that is not evaluated",
    "MLS406": "Invalid rollout steps",
    "MLS407": "Availability and error-rate SLOs disagree",
    "MLS408": "Canary abort rule looser than the SLO",
    # target (MLS5xx)
    "MLS501": "GPU asked of a target that has none",
    "MLS502": "Replica bounds out of order",
    "MLS503": "Setting has no effect on this target",
    "MLS504": "Source kind cannot run on this target",
    "MLS505": "Online store not available on this target",
    "MLS506": "Region required",
    # not supported yet (MLS9xx)
    "MLS901": "Not supported yet",
    "MLS902": "Target layer not generated yet",
}
