"""The router's admission control and its answer counters (mlstack.ops.local.router's
docstring is the spec): at most max_in_flight requests forwarded at once, up to max_queue more
waiting at most queue_timeout_s for a slot; the answers clients got, by status and by who
answered, for GET /metrics."""

from __future__ import annotations

import asyncio
import json
from collections import deque


class Admission:
    """A bounded number of requests in flight, and a bounded, short wait for a slot (a slot
    freed goes to the longest waiting request)."""

    def __init__(self) -> None:
        self.in_flight = self.waiting = 0
        self.admitted = self.shed = 0
        self.waiters: deque[asyncio.Future] = deque()

    def try_acquire(self, limits: dict) -> bool:
        if self.in_flight < limits["max_in_flight"]:
            self.in_flight += 1
            self.admitted += 1
            return True
        return False

    async def acquire(self, limits: dict) -> bool:
        if self.try_acquire(limits):
            return True
        if self.waiting >= limits["max_queue"]:
            self.shed += 1
            return False
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.waiters.append(waiter)
        self.waiting += 1
        def timed_out() -> None:
            if not waiter.done():
                waiter.set_result(False)

        timer = loop.call_later(limits["queue_timeout_s"], timed_out)
        try:
            got = await waiter
        finally:
            self.waiting -= 1
            timer.cancel()
        if not got:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            self.shed += 1
            return False
        self.admitted += 1  # the slot was handed over: in_flight counts it already
        return True

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_flight -= 1

    def counters(self) -> dict:
        return {"in_flight": self.in_flight, "waiting": self.waiting,
                "admitted": self.admitted, "shed": self.shed}


class Answers:
    """Answers sent to clients, counted by (status code, who answered: a version or
    'router'), for GET /metrics."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, str], int] = {}

    def count(self, status: int, answered_by: str) -> None:
        key = (status, answered_by)
        self.counts[key] = self.counts.get(key, 0) + 1

    def render(self, refused_connections: int = 0) -> bytes:
        """Prometheus's text format; a connection refused at a cap got the router's 503."""
        counts: dict[tuple[str, str], int] = {}
        for (status, by), n in list(self.counts.items()):
            counts[(str(status), by)] = counts.get((str(status), by), 0) + n
        if refused_connections:
            key = ("503", "router")
            counts[key] = counts.get(key, 0) + refused_connections
        lines = ["# HELP mlstack_router_requests_total Requests answered to clients, by status "
                 "code and by who answered (a version, or the router itself).",
                 "# TYPE mlstack_router_requests_total counter"]
        lines += [f'mlstack_router_requests_total{{code="{code}",answered_by={json.dumps(by)}}}'
                  f" {n}" for (code, by), n in sorted(counts.items())]
        return ("\n".join(lines) + "\n").encode()
