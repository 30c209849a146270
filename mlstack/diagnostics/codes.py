"""Every diagnostic code mlstack emits: stable, documented (docs/diagnostics.md is generated).

`CODES` maps a code to its one-line title; `EXPLANATIONS` says what it means and how to fix
it. A code is never reused for another meaning; retired codes: MLS001 (an unreadable file is
a usage error, exit code 2) and MLS902 (cluster targets now get their infrastructure layer).
"""

from __future__ import annotations

CODES: dict[str, str] = {
    # loading (MLS0xx)
    "MLS002": "The file is not valid UTF-8",
    "MLS003": "The file starts with a byte-order mark",
    "MLS004": "Tab character in indentation",
    "MLS005": "The spec is empty",
    "MLS006": "The document is not a single mapping",
    "MLS007": "Duplicate key",
    "MLS008": "YAML anchors, aliases, merge keys and tags are refused",
    "MLS009": "The spec file is too large",
    "MLS010": "The document is nested too deeply",
    "MLS011": "YAML syntax error",
    "MLS012": "No spec at this path",
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
    "MLS211": "Feature view the model reads is not online",
    "MLS212": "Entity never used",
    "MLS213": "Source never read",
    "MLS214": "Source column never read",
    "MLS215": "Request field never read",
    "MLS216": "The data does not match the declared columns",
    "MLS217": "Freshness check with no ttl to hold it to",
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
    "MLS409": "Shadow or A/B settings that do not fit",
    # target (MLS5xx)
    "MLS501": "GPU asked of a target that has none",
    "MLS502": "Replica bounds out of order",
    "MLS503": "Setting has no effect on this target",
    "MLS504": "Source kind cannot run on this target",
    "MLS505": "Online store not available on this target",
    "MLS506": "Region required",
    "MLS507": "Resources larger than any node",
    "MLS508": "Compute worker too small",
    "MLS509": "Orchestrator not available on this target",
    # user code (MLS6xx)
    "MLS601": "Invalid code reference",
    "MLS602": "User code path leaves the project folder",
    "MLS603": "User code file not found",
    "MLS604": "Not a Python module file",
    "MLS605": "User code file does not parse",
    "MLS606": "Function not defined at the top level of the file",
    "MLS607": "Function signature does not fit the spec",
    "MLS608": "User code imports the project's other modules",
    # not supported yet (MLS9xx)
    "MLS901": "Not supported yet",
}

EXPLANATIONS: dict[str, str] = {
    "MLS002": "A spec is UTF-8 text. The file holds bytes that are not UTF-8 (it was saved as "
              "Latin-1 or UTF-16, say) or a NUL byte. Save it as UTF-8.",
    "MLS003": "The file starts with a UTF-8 byte-order mark, which some editors add and YAML "
              "tools read differently. Save the file as UTF-8 without BOM.",
    "MLS004": "YAML indents with spaces; a tab in indentation is read differently by different "
              "tools. Replace the tab with spaces.",
    "MLS005": "The file holds no YAML document (only comments or nothing). Start from a "
              "blueprint: `mlstack init DIR --blueprint churn`.",
    "MLS006": "A spec is one YAML mapping that starts with `apiVersion:`. The file holds a "
              "list, a single value, or more than one document (`---`).",
    "MLS007": "A key appears twice in one mapping. YAML parsers keep one of them silently; "
              "mlstack refuses the file so nothing is lost without notice.",
    "MLS008": "Anchors (`&a`), aliases (`*a`), merge keys (`<<`) and tags (`!!python/...`) are "
              "refused: aliases can expand without bound (the 'billion laughs' attack) and "
              "tags ask a YAML library to build objects. Write values out.",
    "MLS009": "The spec file is larger than 1 MB. A spec describes a system; data belongs in "
              "sources.",
    "MLS010": "The document is nested more than 32 levels deep. No part of a spec needs that.",
    "MLS011": "The file is not valid YAML: the message says what the parser found and the "
              "hint says where the construct it was reading began.",
    "MLS012": "A path given to `mlstack lint` names no spec: it does not exist, cannot be "
              "read, or is a folder (or a glob pattern) in which no `mlstack.yaml` was found. "
              "Folders are searched at any depth, skipping what `.gitignore` excludes, "
              "`build/`, `.mlstack/`, `node_modules/` and virtual environments. The other "
              "paths are still linted and reported; lint exits 2.",
    "MLS101": "A key the spec does not know. Keys are strict so a typo cannot be ignored "
              "silently; the hint suggests the closest known key.",
    "MLS102": "A required key is missing; the hint says what it holds.",
    "MLS103": "A value of the wrong type or outside its bounds. Types are strict: `true` is not "
              "a number and `\"80\"` (quoted) is text, not a number.",
    "MLS104": "A value that is not one of the allowed choices; the message lists them.",
    "MLS105": "The spec's `apiVersion` is not one this mlstack reads.",
    "MLS106": "A duration is written with w, d, h, m, s units (`15m`, `1h30m`, `30d`) or as a "
              "positive number of seconds.",
    "MLS107": "Names become Python identifiers, file names and cloud resource names, so they "
              "are restricted to ASCII letters, digits and `_` (system names: `-`), must start "
              "with a letter and must not be Python keywords. Nothing a name holds can inject "
              "code or escape a folder; look-alike Unicode letters are named in the hint.",
    "MLS108": "A transform expression is parsed, never evaluated: numbers, view fields, "
              "arithmetic, comparisons, and/or/not and a short list of functions. Calls to "
              "anything else, attribute access, names with `__`, strings, lambdas and "
              "expressions longer than 500 characters or 200 parts are refused.",
    "MLS109": "A gate is an operator and a number: `>= 0.80`, `< 50`. A bare number means `>=`.",
    "MLS110": "A schedule is a 5-field cron line (`0 3 * * *`) or one of @hourly, @daily, "
              "@weekly, @monthly, @yearly.",
    "MLS111": "Memory is written in Mi, Gi or Ti (`512Mi`, `4Gi`).",
    "MLS112": "Source paths are relative to the spec's folder and cannot leave it: no absolute "
              "paths, no `..`, no drive letters or URLs.",
    "MLS201": "A feature view names an entity that is not declared under `entities`.",
    "MLS202": "A feature view (or a stream's batch_source) names a source that is not declared.",
    "MLS203": "A view field, data check or group_by names a column the source does not declare "
              "in `columns`.",
    "MLS204": "A model feature, transform input or drift feature does not resolve: features "
              "are written `view.field` or as a transform's name.",
    "MLS205": "The label's source or field does not exist.",
    "MLS206": "Two sources, entities, views or transforms share a name, or a list names the "
              "same item twice.",
    "MLS207": "An entity's join key is not a column of a source that must carry it (the view's "
              "source, or the label source so training rows can be joined to features).",
    "MLS208": "A transform input is a bare field found in more than one view (write "
              "`view.field`), or names another transform.",
    "MLS209": "Types do not fit: a timestamp field that is not a timestamp, a join key or "
              "timestamp listed as a feature, text where a transform or model needs numbers, "
              "a range check on text, allowed values of the wrong type, or a join key with "
              "different types in different sources.",
    "MLS210": "A source's timestamp_field (or created_timestamp_field) is not one of its "
              "declared columns.",
    "MLS211": "The model reads a feature view declared `online: false`; the service fetches "
              "features online, so it could not serve the model.",
    "MLS212": "A warning: an entity no feature view is keyed by. It does nothing (Feast still "
              "registers it); it is often a leftover or a typo of the entity a view names. "
              "Remove it, or key a view by it.",
    "MLS213": "A warning: a source no feature view reads and that is not the label's (nor "
              "the batch source of one that is). It is never read; remove it or read it.",
    "MLS214": "A warning: a declared column of a used source that nothing reads: no view "
              "field, join key, label, ranking group_by, timestamp field, data check or "
              "request field names it. Remove it from `columns`, or use it.",
    "MLS215": "A warning: a request source's field that no transform and no model feature "
              "reads. A request would have to carry it for nothing; remove it or use it.",
    "MLS216": "Reported by `mlstack lint --data`, which reads the file sources' schemas (a "
              "parquet footer, a CSV header and its first 1000 rows): a declared column whose "
              "type in the file is not its declared dtype and does not widen to it without loss "
              "(float to int, text to number, a number to text in a parquet file), nulls in an "
              "int64, int32 or bool column (none is allowed: declare float64 to keep missing "
              "values), a declared column the file lacks, or a file that is missing or cannot "
              "be read. Ingest applies the same rule to every row (see FileSource in the spec "
              "reference). Declare the type the data holds, or fix the data.",
    "MLS217": "A source's `checks.freshness` holds its newest row to the ttl of the feature "
              "views reading it, but no feature view reads the source (a label source, say), "
              "so there is no ttl to compare with. Remove it, or set it on a source a view "
              "reads.",
    "MLS301": "An evaluation metric does not fit the model's task (rmse for a classifier, say); "
              "the hint lists the metrics of the task.",
    "MLS302": "A gate names a metric that is not in `evaluation.metrics`, so it could never be "
              "checked.",
    "MLS303": "The algorithm is not available for the task and framework; the hint suggests "
              "the closest one.",
    "MLS304": "The framework, or the task with this framework, is not supported yet "
              "(sklearn, xgboost, lightgbm and pytorch are; ranking with pytorch is not).",
    "MLS305": "A parameter the estimator does not accept; the hint suggests the closest one.",
    "MLS306": "The label's type does not fit the task (a float label for a classifier, say).",
    "MLS401": "Latency objectives must grow: p50 <= p95 <= p99.",
    "MLS402": "Adaptive batching makes a request wait up to max_latency_ms; with the HTTP, "
              "feature fetch and model time it must fit inside the p99 objective. The message "
              "shows the arithmetic. As a warning: the p99 objective leaves no room for "
              "batching at all, so it is turned off.",
    "MLS403": "A view's TTL is shorter than the freshness objective: values expire before they "
              "are allowed to be stale, so lookups return nothing.",
    "MLS404": "The model may not be older than model_staleness, but training runs less often "
              "than that (or has no schedule).",
    "MLS405": "A quality objective names a metric that is not evaluated.",
    "MLS406": "Canary steps must increase and end at 100; all_at_once takes no steps; abort "
              "rules compare with `>`.",
    "MLS407": "The error-rate objective allows more failures than the availability objective.",
    "MLS408": "The canary aborts only at a latency far above the p99 objective, so a version "
              "that breaks the SLO would roll out.",
    "MLS409": "A shadow or A/B setting that cannot work as written: rollout.shadow or "
              "rollout.ab beside another strategy, strategy ab without its experiment, an "
              "assignment key the requests do not carry, an A/B test without the prediction "
              "log it reads its outcomes from.",
    "MLS501": "GPUs are asked of a target that has none for them: serving on the local "
              "target, or training a CPU-only framework (sklearn) there.",
    "MLS502": "replicas.min is above replicas.max. As a warning: the throughput objective needs "
              "more replicas than replicas.max and the maximum was raised.",
    "MLS503": "A setting that has no effect on the chosen target (spot, region, namespace or "
              "replicas locally; gpu_type without gpus).",
    "MLS504": "The source kind cannot be read on this target (a warehouse on the local target).",
    "MLS505": "The online store is not available on this target.",
    "MLS506": "The target needs a region (aws).",
    "MLS507": "A serving, training or Ray worker (target.compute.worker) pod asks for more CPU, "
              "memory or GPUs than one node of the price table holds (after the node's own "
              "overhead), or for a GPU type it does not list, so no node group can be sized for "
              "it (kubernetes and aws targets).",
    "MLS508": "A worker node of target.compute has less memory than a Ray worker needs before "
              "its task holds any data (a Ray worker that imported pandas, pyarrow and xgboost "
              "takes about 440 MiB here): give each worker at least 1024Mi.",
    "MLS509": "The orchestrator cannot run on this target: Kubeflow Pipelines runs each step "
              "as a pod on Kubernetes, so it needs the kubernetes target (docs/orchestrators.md).",
    "MLS601": "`model.estimator` and a transform's `python` name a function of the project's "
              "own code as `file.py:function`: a path, a colon and a Python identifier.",
    "MLS602": "A user code file is named relative to the spec's folder and must stay inside "
              "it: no absolute paths, `~`, `..`, drive letters, URLs or backslashes, and no "
              "symlink that resolves outside the folder. mlstack copies the file into the "
              "generated code, so it must be the project's own.",
    "MLS603": "The file a code reference names does not exist in the project folder (or is a "
              "folder, or cannot be read); the hint suggests a .py file with a close name.",
    "MLS604": "The file must be a `.py` file whose path is a Python module name: each folder "
              "and the file's stem are ASCII identifiers without `__` and not keywords. It "
              "becomes a module of the generated package (`<system>_system.user_code...`), so two "
              "files may not be a module and a package of one name (`src.py`, `src/x.py`).",
    "MLS605": "mlstack parses the file with Python's `ast` (it never imports it at lint time) "
              "and it does not parse: a syntax error (its file:line:column is in the "
              "message), text that is not UTF-8, a NUL byte, or a file over 1 MB.",
    "MLS606": "The function is not defined with `def` at the top level of the file: it is "
              "missing (the hint suggests a close name), nested in another block, a class, an "
              "async function, an imported or assigned name. Write a plain top-level "
              "function; it may call anything.",
    "MLS607": "The function cannot be called the way the spec calls it. A python transform "
              "gets one numpy array per input, positionally, in the order of `inputs`: it must "
              "take that many positional arguments (or *args) and need nothing else. An "
              "estimator factory gets `model.params` as keyword arguments: it must accept each "
              "(by name, or with **kwargs) and need nothing params do not give. The message "
              "shows the def and its line.",
    "MLS608": "Only the file the spec names is copied into the generated code, so it may not "
              "import the project's other modules: no relative imports and no import of a "
              "module that is a file or folder beside it (or in the spec's folder). Put what "
              "it needs in the same file, or install it as a package.",
    "MLS901": "The spec language accepts this option but mlstack cannot carry it out yet; it is "
              "refused rather than silently ignored.",
}
