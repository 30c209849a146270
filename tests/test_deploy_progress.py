"""Deploy's progress lines: one line per stage when piped (no wrap at 80 columns), and the
running stage's spinner shows how long it has run."""

from __future__ import annotations

import io
import time

from rich.console import Console

from mlstack.cli.commands.deploy import ConsoleProgress, running_text
from mlstack.ops.report import StageRecord, StageStatus

LONG = "50 of 50 entities: online = offline, max prediction diff 0.0; " * 3


def _progress(terminal: bool) -> tuple[ConsoleProgress, io.StringIO]:
    progress = ConsoleProgress()
    out = io.StringIO()
    progress.console = Console(file=out, force_terminal=terminal, width=80)
    return progress, out


def test_a_piped_stage_line_is_not_wrapped():
    progress, out = _progress(terminal=False)
    progress.start("skew_check")
    progress.finish(StageRecord("skew_check", StageStatus.DONE, 8.2, LONG))
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].rstrip().endswith(LONG.rstrip())


def test_the_running_stage_shows_its_elapsed_time():
    assert running_text("skew check (online vs offline)", 12.4) == (
        "skew check (online vs offline)... 12 s")
    progress, out = _progress(terminal=True)
    progress.start("skew_check")
    progress.stage_began -= 42  # as if the stage had run for 42 s
    deadline = time.monotonic() + 10
    while "42 s" not in out.getvalue() and "43 s" not in out.getvalue():
        assert time.monotonic() < deadline, out.getvalue()[-500:]
        time.sleep(0.2)
    progress.finish(StageRecord("skew_check", StageStatus.DONE, 42.0))
    progress.close()
