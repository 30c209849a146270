"""The service's adaptive batching: whenever the model is free, the requests that queued while
it was busy go in one call (up to max_batch_size rows).

It never holds a request on purpose and learns nothing from past traffic (BentoML's own
batcher waits for its batch to grow by the average wait it learned from recent batches; after
an overload that wait outlives the overload and keeps refusing requests at a normal rate). Here
a request waits only while the call before it runs, so an overload leaves nothing behind but
its queue. Under overload it sheds: a request still queued `max_latency_ms` after it arrived
is refused (HTTP 503, ServiceUnavailable) without being run, so the ones that are answered
keep their latency.

    batcher = Batcher(predict_rows, max_batch_size=32, max_latency_ms=54)
    values = await batcher(rows)      # in the service's event loop; one value per row

The call runs in the event loop itself (no thread hop): it is short (a feature lookup and a
model call), and while it runs the loop could only queue more requests.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batcher", "BatcherStats"]

# Loop turns a batch waits for requests already read from their sockets to reach the queue.
GATHER_TURNS = 8


@dataclass
class BatcherStats:
    calls: int = 0
    rows: int = 0
    shed: int = 0
    largest: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "rows": self.rows, "shed": self.shed,
                "largest_batch": self.largest}


@dataclass
class _Job:
    rows: Sequence[Any]
    future: asyncio.Future[list[Any]]
    arrived: float


def _overloaded(waited_ms: float) -> Exception:
    message = (f"overloaded: queued {waited_ms:.0f} ms, past the batching budget; "
               "retry shortly")
    try:
        from bentoml.exceptions import ServiceUnavailable
    except ImportError:  # pragma: no cover - the runtime extra installs bentoml
        return RuntimeError(message)
    return ServiceUnavailable(message)


@dataclass
class Batcher:
    """Batches calls of `call` (rows -> one value per row) across concurrent requests."""

    call: Callable[[list[Any]], Sequence[Any]]
    max_batch_size: int
    max_latency_ms: float
    clock: Callable[[], float] = time.monotonic
    stats: BatcherStats = field(default_factory=BatcherStats)

    def __post_init__(self) -> None:
        self._queue: collections.deque[_Job] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, rows: Sequence[Any]) -> list[Any]:
        if not rows:
            return []
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first call, or another loop (a test's asyncio.run)
            self._loop, self._wake, self._worker = loop, asyncio.Event(), None
            self._queue.clear()
        job = _Job(rows, loop.create_future(), self.clock())
        self._queue.append(job)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        assert self._wake is not None  # set with self._loop above
        self._wake.set()
        return await job.future

    async def _gather(self) -> None:
        """Yield to the loop while requests keep reaching the queue (requests read during the
        last call are still on their way through the HTTP stack)."""
        seen = -1
        for _ in range(GATHER_TURNS):
            queued = sum(len(job.rows) for job in self._queue)
            if queued == seen or queued >= self.max_batch_size:
                return
            seen = queued
            await asyncio.sleep(0)

    def _take(self) -> list[_Job]:
        """The next batch: queued jobs in order up to max_batch_size rows (a job larger than
        that runs alone); jobs past their budget are refused on the way."""
        budget = self.max_latency_ms / 1000.0
        now = self.clock()
        batch: list[_Job] = []
        size = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # the client went away
                self._queue.popleft()
                continue
            if now - job.arrived > budget:
                self._queue.popleft()
                self.stats.shed += 1
                job.future.set_exception(_overloaded((now - job.arrived) * 1000))
                continue
            if batch and size + len(job.rows) > self.max_batch_size:
                break
            self._queue.popleft()
            batch.append(job)
            size += len(job.rows)
        return batch

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._gather()
            batch = self._take()
            if not batch:
                continue
            rows = [row for job in batch for row in job.rows]
            try:
                values = list(self.call(rows))
                if len(values) != len(rows):
                    raise RuntimeError(f"{len(values)} values for {len(rows)} rows")
            except Exception as exc:  # each request of the batch gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                self.stats.calls += 1
                self.stats.rows += len(rows)
                self.stats.largest = max(self.stats.largest, len(rows))
                start = 0
                for job in batch:
                    end = start + len(job.rows)
                    if not job.future.done():
                        job.future.set_result(values[start:end])
                    start = end
            await asyncio.sleep(0)  # let the loop answer this batch and read new requests
