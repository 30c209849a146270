"""Following one pipeline run to its end, whichever orchestrator runs it (`mlstack run`):
poll the orchestrator's API, report each state change and each task as it finishes, ride out
a server that stops answering for a while (the keeper restarts it; the run goes on without
it), and give up on a run nobody picks up.

The orchestrator's side is one function, `poll()`, returning a `Seen`: served_run (Prefect)
and airflow_run (Airflow) each write theirs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

POLL_SECONDS = 1.0
SERVER_GONE_TIMEOUT = 180.0  # seconds a follower waits for a server that stopped answering
SERVER_AWAY = "(server not answering: waiting for it)"  # what on_state hears meanwhile


@dataclass
class Seen:
    """One look at the run."""
    state: str  # its state's name, as on_state reports it
    final: bool  # it ended
    waiting: bool  # not yet picked up (scheduled, queued)
    run: dict  # the orchestrator's own record of it
    tasks: list[dict] = field(default_factory=list)  # progress lines of the tasks just ended


@dataclass(frozen=True)
class Follow:
    server: str  # "the Prefect server", in the messages
    url: str  # the run's page, in the messages
    pickup_timeout: float
    unpicked: str  # why a run still waiting at pickup_timeout is given up on
    on_state: Callable[[str], None] | None = None
    on_task: Callable[[dict], None] | None = None


def follow(poll: Callable[[], Seen], how: Follow) -> tuple[Seen, list[dict]]:
    """Poll until the run ends: (the last look, every task line in the order they ended).
    RuntimeError when the server stays away SERVER_GONE_TIMEOUT, or the run waits past
    how.pickup_timeout."""
    began = time.monotonic()
    last_state: str | None = None
    tasks: list[dict] = []
    away_since: float | None = None
    while True:
        try:
            seen = poll()
        except RuntimeError as exc:
            now = time.monotonic()
            away_since = away_since or now
            if now - away_since > SERVER_GONE_TIMEOUT:
                raise RuntimeError(f"{how.server} has not answered for "
                                   f"{SERVER_GONE_TIMEOUT:g} s ({exc}); the run: "
                                   f"{how.url}") from None
            if how.on_state is not None and last_state != SERVER_AWAY:
                last_state = SERVER_AWAY
                how.on_state(SERVER_AWAY)
            time.sleep(POLL_SECONDS)
            continue
        away_since = None
        for line in seen.tasks:  # before the state that ends the run
            tasks.append(line)
            if how.on_task is not None:
                how.on_task(line)
        if seen.state != last_state:
            last_state = seen.state
            if how.on_state is not None:
                how.on_state(seen.state)
        if seen.final:
            return seen, tasks
        if seen.waiting and time.monotonic() - began > how.pickup_timeout:
            raise RuntimeError(f"{how.unpicked} in {how.pickup_timeout:g} s (it is still "
                               f"{seen.state}): see mlstack status; the run: {how.url}")
        time.sleep(POLL_SECONDS)
