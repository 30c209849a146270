"""mlstack run feed [SPEC]: fresh events appended to the project's file sources every minute.

The `run` verb (run.py) takes FLOW `feed` and hands it here; the options below are the
feed's own.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TypedDict

from mlstack.cli.arguments import count, positive_number, spec_of
from mlstack.diagnostics.errors import UsageError

DESCRIPTION = (
    " feed is not a flow: it appends a batch of fresh rows to every file source of the spec "
    "every --every seconds (the source's newest rows, sampled, stamped now; the label "
    "source's rows and the feature rows of the same entities together; numeric features "
    "moved by --drift standard deviations, which accumulates tick after tick), each file "
    "replaced in one rename and only when it still passes its data checks, so a deployed "
    "project's scheduled materialize keeps features fresh, monitoring sees drift move and a "
    "retrain finds new data. It needs no deploy, prints one line per tick (what it appended "
    "where; with --format json, one JSON object per tick, a line each) and stops on Ctrl-C "
    "after the tick in flight (exit 0); exit 2 when the spec has no file source or a source "
    "cannot be fed (nothing of that tick written).")


class FeedDefaults(TypedDict):
    every: float
    rows: int
    drift: float


DEFAULTS: FeedDefaults = {"every": 60.0, "rows": 20, "drift": 0.05}


def _drift(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    """The feed's options on the `run` verb's parser (and its part of the description)."""
    parser.description = (parser.description or "") + DESCRIPTION
    group = parser.add_argument_group("feed options (mlstack run feed)")
    group.add_argument("--every", type=positive_number, metavar="SECONDS", default=None,
                       help="feed: seconds between ticks (default 60)")
    group.add_argument("--rows", type=count, metavar="N", default=None,
                       help="feed: rows sampled per source and tick (default 20; a source "
                            "fed with the label source's entities gets one per entity)")
    group.add_argument("--drift", type=_drift, metavar="D", default=None,
                       help="feed: standard deviations each tick moves the numeric features "
                            "by (default 0.05; 0: no drift; negative: down)")
    group.add_argument("--once", action="store_true", default=None,
                       help="feed: one tick, then exit (the same as --ticks 1)")
    group.add_argument("--ticks", type=count, metavar="N", default=None,
                       help="feed: stop after N ticks (default: run until Ctrl-C)")
    group.add_argument("--seed", type=lambda t: count(t, 0), metavar="N", default=None,
                       help="feed: seed of the sampling, for a repeatable feed (tick k uses "
                            "N+k; default: fresh randomness)")


FEED_OPTIONS = ("every", "rows", "drift", "once", "ticks", "seed")


def wanted(args: argparse.Namespace) -> bool:
    """Whether `mlstack run` is to feed: FLOW feed, or a feed option given (refused then)."""
    return args.flow == "feed" or any(getattr(args, o, None) is not None for o in FEED_OPTIONS)


def run(args: argparse.Namespace) -> int:
    from mlstack.ops.feed import run_feed

    given = [f"--{o}" for o in FEED_OPTIONS if getattr(args, o, None) is not None]
    if args.flow != "feed":
        raise UsageError(f"{', '.join(given)}: only mlstack run feed takes "
                         f"{'this option' if len(given) == 1 else 'these options'}")
    if args.once and args.ticks not in (None, 1):
        raise UsageError("--once and --ticks disagree", "give one of them")
    ticks = 1 if args.once else args.ticks
    every = DEFAULTS["every"] if args.every is None else args.every
    rows = DEFAULTS["rows"] if args.rows is None else args.rows
    drift = DEFAULTS["drift"] if args.drift is None else args.drift
    as_json = args.format == "json"

    def started(feed) -> None:
        if as_json:
            return
        how = "once" if ticks == 1 else (f"{ticks} ticks" if ticks else "until Ctrl-C")
        sys.stderr.write(f"Feeding {rows} rows per source every {every:g} s ({how}), drift "
                         f"{drift:g} sd per tick...\n")
        for name in feed.skipped:
            sys.stderr.write(f"  {name}: not a file source, not fed\n")
        sys.stderr.flush()

    def tick_line(tick) -> None:
        if as_json:
            sys.stdout.write(json.dumps({"tick": tick.number, "at": tick.at, "sources": [
                {"name": s.name, "path": s.path, "at": s.at, "rows": s.rows, "total": s.total,
                 "drifted": s.drifted} for s in tick.sources]}, sort_keys=True) + "\n")
        else:
            parts = []
            for s in tick.sources:
                moved = ", ".join(f"{c} {v:+.4g}" for c, v in sorted(s.drifted.items()))
                stamped = f", stamped {s.at}" if s.at != tick.at else ""
                parts.append(f"{s.name} +{s.rows} ({s.path}, {s.total} rows{stamped}"
                             f"{'; drift ' + moved if moved else ''})")
            sys.stdout.write(f"tick {tick.number} at {tick.at}: {'; '.join(parts)}\n")
        sys.stdout.flush()

    try:
        done = run_feed(spec_of(args), rows=rows, drift=drift, every=every, ticks=ticks,
                        seed=args.seed, on_tick=tick_line, on_start=started).ticks
    except KeyboardInterrupt:
        # Ctrl-C is how a feed ends: the tick in flight has written (or not started)
        sys.stderr.write("Feed stopped (Ctrl-C).\n")
        return 0
    if not as_json:
        sys.stderr.write(f"Fed {done} tick{'s' if done != 1 else ''}.\n")
    return 0
