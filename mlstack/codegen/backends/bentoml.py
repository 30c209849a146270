"""The serving layer: a BentoML 1.4 service (service/service.py) and its bentofile.

The service takes entity keys (typed exactly, a row limit per request), fetches online
features through the shared store module as numpy arrays, computes the model's input with
the shared transforms (the code training used) and scores it with the model the training
flow registered: its ONNX export on ONNX Runtime when that matched the native model, else
scikit-learn. Batching (mlstack.runtime.batching), timeout and resources come from the IR;
a local deploy replaces the batching with one measured for the version. Health, readiness and
Prometheus metrics are BentoML's own (/healthz, /livez, /readyz, /metrics).
"""

from __future__ import annotations

from mlstack import __version__
from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.shared import header
from mlstack.codegen.contract import (
    ENV_MODEL_TAG,
    FEATURE_REPO_DIR,
    MANIFEST_FILE,
    TELEMETRY_ENV,
    USER_CODE_DIR,
    package_name,
    service_class,
)
from mlstack.codegen.filetree import FileTree
from mlstack.codegen.jinja import render_template
from mlstack.frontend.ir.catalog import FRAMEWORK_PACKAGES
from mlstack.frontend.ir.nodes import ColumnNode, SystemIR

# Python types of request fields and served values, by spec dtype.
PYTHON_TYPES = {"int64": "int", "int32": "int", "float64": "float", "float32": "float",
                "bool": "bool", "string": "str", "timestamp": "str"}

# A key value of each dtype for the start-up lookup (whether it exists does not matter).
ZERO_VALUES = {"int64": 0, "int32": 0, "float64": 0.0, "float32": 0.0, "bool": False,
               "string": "", "timestamp": ""}

# Packages a built bento installs besides mlstack itself (mlstack.runtime runs the service):
# the runtime extra's serving libraries, without the build tools. bentoml itself is added
# by `bentoml build`.
RUNTIME_PACKAGES = ("feast>=0.50,<1", "onnxruntime>=1.17", "pandas>=2.0", "pyarrow>=14",
                    "scikit-learn>=1.4")


def runtime_packages(framework: str = "sklearn") -> tuple[str, ...]:
    """RUNTIME_PACKAGES, the model's framework (the native model is unpickled with it) and
    mlstack, pinned to this release's minor version (the service checks the runtime API it
    was compiled for at import)."""
    major, minor = __version__.split(".")[:2]
    return (*RUNTIME_PACKAGES, *FRAMEWORK_PACKAGES.get(framework, ()),
            f"mlstack>={major}.{minor},<{major}.{int(minor) + 1}")

# Attribute names a request field cannot have on a pydantic model; such keys get an alias.
_RESERVED_FIELDS = frozenset({"copy", "dict", "json", "schema", "construct", "validate",
                              "fields", "parse_obj", "parse_raw", "parse_file", "from_orm",
                              "update_forward_refs", "schema_json"})

SERVICE_DIR = "service"


# The range of each integer dtype: a key outside it is refused (400), not a failed lookup.
INT_RANGES = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}


def request_fields(keys: tuple[ColumnNode, ...]) -> list[dict]:
    """Request row fields: a plain attribute when the key is a safe pydantic field name,
    otherwise a neutral attribute with the key as its alias (keys like '_id', 'model_x').
    `field`: the pydantic Field arguments (alias, integer range, finite floats)."""
    fields = []
    for i, key in enumerate(keys):
        safe = not (key.name.startswith(("_", "model_")) or key.name in _RESERVED_FIELDS)
        field: dict = {} if safe else {"alias": key.name}
        if key.dtype in INT_RANGES:
            field["ge"], field["le"] = INT_RANGES[key.dtype]
        elif key.dtype.startswith("float"):
            field["allow_inf_nan"] = False
        fields.append({"attr": key.name if safe else f"key_{i}",
                       "alias": None if safe else key.name,
                       "type": PYTHON_TYPES[key.dtype], "field": field})
    return fields


def ranking(system: SystemIR) -> dict | None:
    """A ranking model's /rank request: the group key (model.group_by, a column of the label
    source, in its dtype) and the candidates' keys (the request keys other than the group
    key). `group_in_rows`: whether the group key is a request key too (then each scored row
    carries it). None for other tasks."""
    m = system.model
    if m.task != "ranking" or m.group_by is None:
        return None
    column = system.source(system.label.source).column(m.group_by)
    assert column is not None  # resolve checked it (MLS203)
    candidate_keys = tuple(k for k in m.request_keys if k.name != m.group_by)
    candidate_keys += m.request_fields  # per candidate: the values the model reads with it
    group = request_fields((column,))[0]
    candidates = request_fields(candidate_keys)
    return {"group": group, "group_name": column.name,
            "group_in_rows": any(k.name == m.group_by for k in m.request_keys),
            "candidate_fields": candidates,
            "answer_fields": candidates[:len(candidates) - len(m.request_fields)],
            "candidate_keys": tuple(k.name for k in candidate_keys),
            "candidate_attributes": tuple(f["attr"] for f in candidates),
            "score_type": served_type(system)}


def batchable(system: SystemIR) -> bool:
    """Batching needs batches of at least two rows; a size of 1 means no batching."""
    batching = system.serving.batching
    return batching.enabled and batching.max_batch_size > 1


def workers(system: SystemIR) -> int:
    """One worker process per requested whole core. A worker is one Python process with one
    event loop (and its own batching queue): on 2 cores one process saturates near 600 req/s
    (its request handling holds the GIL), two answered 1.5-2x that at concurrency 16-64 in
    the same run (bench section 3)."""
    return max(1, int(system.target.serving.cpu))


def onnx_threads(system: SystemIR) -> int:
    """ONNX Runtime's intra-op threads: the serving CPU budget of one worker less the core its
    HTTP server and feature lookups run on (at least 1). Measured on 2 cores: the churn model
    (150 trees) scores 1 / 32 / 128 rows in 0.008 / 0.046 / 0.35 ms on one thread, 0.019 /
    0.083 / 0.39 ms on two: small batches do not pay for a second thread."""
    return max(1, int(system.target.serving.cpu // workers(system)) - 1)


def resources(system: SystemIR) -> dict:
    serving = system.target.serving
    out: dict = {"cpu": serving.cpu, "memory": f"{serving.memory_mib}Mi"}
    if serving.gpu > 0:
        # gpu_type is left to the infra layer: BentoML reads it only on BentoCloud.
        out["gpu"] = serving.gpu
    return out


def prediction_log(system: SystemIR) -> dict | None:
    """The writer's settings of monitoring.prediction_log (None when it is off)."""
    log = system.monitoring.prediction_log
    if not log.enabled:
        return None
    return {"max_queue": log.queue, "flush_seconds": log.flush_seconds,
            "retention_hours": log.retention_hours}


def served_type(system: SystemIR) -> str:
    """The JSON type of one prediction: the class for multiclass, else a number."""
    if system.model.task == "multiclass_classification":
        return PYTHON_TYPES[system.label.dtype]
    return "float"


class BentoMLBackend:
    name = "bentoml"
    templates = ("bentoml/service.py.j2", "bentoml/bentofile.yaml.j2")

    def applies(self, system: SystemIR) -> bool:
        return True

    def render(self, system: SystemIR, options: CompileOptions) -> FileTree:
        pkg = package_name(system)
        m = system.model
        batching = system.serving.batching
        context = dict(
            system=system, header=header(system), package=pkg,
            service_class=service_class(system),
            service_module=f"{SERVICE_DIR}.service",
            row_fields=request_fields(m.request_keys + m.request_fields),
            key_attributes=tuple(f["attr"] for f in request_fields(m.request_keys)),
            field_attributes=tuple(f["attr"] for f in request_fields(
                m.request_keys + m.request_fields)[len(m.request_keys):]),
            request_field_dtypes={f.name: f.dtype for f in m.request_fields},
            warmup_row={k.name: ZERO_VALUES[k.dtype] for k in m.request_keys + m.request_fields},
            runtime=system.serving.runtime, onnx_threads=onnx_threads(system),
            max_request_rows=system.serving.max_request_rows,
            served_type=served_type(system), ranking=ranking(system),
            batching={"enabled": batchable(system), "max_batch_size": batching.max_batch_size,
                      "max_latency_ms": batching.max_latency_ms},
            timeout_seconds=system.serving.timeout_ms / 1000,
            resources=resources(system), workers=workers(system),
            labels={"system": system.name},
            includes=sorted([f"{SERVICE_DIR}/service.py", f"{pkg}/*.py",
                             f"{FEATURE_REPO_DIR}/feature_store.yaml", MANIFEST_FILE]
                            + ([f"{pkg}/{USER_CODE_DIR}/**/*.py"] if system.user_files else [])),
            packages=sorted(runtime_packages(m.framework)),
            env_model_tag=ENV_MODEL_TAG,
            envs=dict(TELEMETRY_ENV),
            prediction_log=prediction_log(system),
        )
        tree = FileTree()
        for template in self.templates:
            out = template.removeprefix("bentoml/").removesuffix(".j2")
            tree.add(f"{SERVICE_DIR}/{out}", render_template(template, **context))
        return tree
