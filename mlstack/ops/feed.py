"""`mlstack run feed`: fresh events appended to a project's file sources, tick after tick.

    run_feed(spec, rows=20, drift=0.05, every=60, ticks=None, on_tick=...)

The plan comes from the resolved spec (its file sources with their path, format, event
time, columns and data checks, as the generated pipeline declares them; each source's entity
keys, numeric feature fields and label field). Each tick runs the runtime in a child process
(`python -m mlstack.runtime.feed`, as init's sample dating does: the compiler never imports
the runtime), in a session of its own, so a Ctrl-C in the terminal lets the tick in flight
finish its write before the loop stops. What a tick did goes to `on_tick`.

The feed works on the project's files and takes no project lock: it runs beside a deployed
project, whose materialize schedule, monitoring and retrains read what it appends.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.codegen.backends.prefect import flow_context
from mlstack.diagnostics.errors import MissingExtraError, UsageError
from mlstack.frontend.analysis import require_system
from mlstack.frontend.ir.nodes import SystemIR
from mlstack.workspace.build import spec_paths

NUMBERS = ("int64", "int32", "float64", "float32")
TICK_TIMEOUT = 600.0  # one tick reads and rewrites each source file once


@dataclass(frozen=True)
class FedSource:
    name: str
    path: str
    at: str  # the event time of its new rows
    rows: int
    total: int
    drifted: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedTick:
    """One tick: its number (from 1), the event time of its rows, and what each source got."""

    number: int
    at: str
    sources: tuple[FedSource, ...]


@dataclass(frozen=True)
class FeedRun:
    ticks: int
    skipped: tuple[str, ...] = ()  # sources the feed cannot append to (warehouse, stream)


def feed_plan(system: SystemIR, project_dir: Path) -> dict:
    """The runtime's plan (mlstack.runtime.feed) for a resolved system; UsageError when it has
    no file source to feed."""
    files = [s for s in system.sources if s.family == "file"]
    if not files:
        others = ", ".join(sorted(f"{s.name} ({s.kind})" for s in system.sources))
        raise UsageError(f"nothing to feed: {system.name} has no file source (its sources: "
                         f"{others}); the feed appends to parquet and CSV files",
                         "feed a warehouse or stream source from the system that owns it")
    keys = {k.name for entity in system.entities for k in entity.join_keys}
    features: dict[str, set[str]] = {}
    for view in system.feature_views:
        features.setdefault(view.source, set()).update(f.name for f in view.fields)
    sources = []
    for s in flow_context(system)["sources"]:
        node = system.source(s["name"])
        sources.append({
            **s,
            "keys": sorted(c.name for c in node.columns if c.name in keys),
            "features": sorted(c.name for c in node.columns if c.dtype in NUMBERS
                               and c.name in features.get(node.name, ())),
            "labels": [system.label.field] if system.label.source == node.name else [],
        })
    label = system.label.source if any(s.name == system.label.source for s in files) else None
    return {"project_dir": str(project_dir.resolve()), "label_source": label,
            "sources": sources}


def run_feed(spec: Path | str, *, rows: int, drift: float, every: float,
             ticks: int | None = None, seed: int | None = None,
             on_tick: Callable[[FeedTick], None] | None = None,
             on_start: Callable[[FeedRun], None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> FeedRun:
    """Append fresh rows to the spec's file sources every `every` seconds, `ticks` times (None:
    until interrupted; KeyboardInterrupt stops it between ticks, or after the tick in
    flight has written). SpecError for a spec with errors, UsageError for one with nothing to
    feed or a source the feed cannot append to (nothing of that tick is written)."""
    for module in ("pandas", "pyarrow"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError("runtime", module, "mlstack run feed")
    paths = spec_paths(spec)
    if not paths.spec.is_file():
        raise UsageError(f"no spec at {paths.spec}")
    system, _ = require_system(paths.spec)
    plan = feed_plan(system, paths.project_dir)
    run = FeedRun(0, tuple(sorted(s.name for s in system.sources if s.family != "file")))
    if on_start is not None:
        on_start(run)
    done = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlstack-feed-") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        while ticks is None or done < ticks:
            if done:
                sleep(max(0.0, start + done * every - time.monotonic()))
            tick_seed = None if seed is None else seed + done
            tick = _tick(plan_file, Path(tmp) / "result.json", rows, drift, tick_seed)
            done += 1
            tick = FeedTick(done, tick.at, tick.sources)
            if on_tick is not None:
                on_tick(tick)
    return FeedRun(done, run.skipped)


def _tick(plan_file: Path, result: Path, rows: int, drift: float,
          seed: int | None) -> FeedTick:
    result.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "mlstack.runtime.feed", str(plan_file), "--rows", str(rows),
            "--drift", repr(drift), "--result", str(result)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    # a session of its own: the terminal's Ctrl-C reaches this process only, which lets the
    # child finish its write (a rename, so nothing half-written either way) and then stops
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=TICK_TIMEOUT)
    except KeyboardInterrupt:
        proc.communicate(timeout=TICK_TIMEOUT)
        raise
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise UsageError(f"a feed tick did not finish in {TICK_TIMEOUT:.0f} s") from None
    answer = json.loads(result.read_text()) if result.is_file() else {}
    if proc.returncode == 0 and "sources" in answer:
        return FeedTick(0, answer["at"], tuple(FedSource(**s) for s in answer["sources"]))
    if "error" in answer:
        raise UsageError(f"cannot feed: {answer['error']}",
                         "fix the source's data, or the spec's checks, and run the feed again")
    last = (stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    raise UsageError(f"the feed tick failed: {last[0]}")
