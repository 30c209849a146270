"""The service's batching: concurrent requests share calls, nothing is held on purpose,
requests past their budget are shed (503), and nothing outlives an overload."""

from __future__ import annotations

import asyncio

import pytest

from mlstack.runtime.batching import Batcher


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_concurrent_requests_share_calls_and_get_their_own_values():
    calls = []

    def call(rows):
        calls.append(list(rows))
        return [r * 10 for r in rows]

    async def main():
        batcher = Batcher(call, max_batch_size=8, max_latency_ms=1000)
        first = await batcher([1])  # alone: called at once
        many = await asyncio.gather(*(batcher([i, i + 100]) for i in range(6)))
        return batcher, first, many

    batcher, first, many = asyncio.run(main())
    assert first == [10]
    assert many == [[i * 10, (i + 100) * 10] for i in range(6)]
    assert calls[0] == [1]
    assert max(len(c) for c in calls[1:]) == 8  # up to max_batch_size rows per call
    assert sum(len(c) for c in calls) == 13
    assert batcher.stats.as_dict() == {"calls": len(calls), "rows": 13, "shed": 0,
                                       "largest_batch": 8}


def test_a_ranking_request_larger_than_a_batch_is_one_call_of_its_own():
    """/rank sends a group's candidates as one job: it is never split, runs alone when it
    alone exceeds max_batch_size, and the single-row requests around it still share calls."""
    calls = []

    def call(rows):
        calls.append(list(rows))
        return [r * 10 for r in rows]

    async def main():
        batcher = Batcher(call, max_batch_size=4, max_latency_ms=1000)
        group = list(range(100, 120))
        return await asyncio.gather(batcher([1]), batcher(group), batcher([2]), batcher([3]))

    one, ranked, two, three = asyncio.run(main())
    assert ranked == [r * 10 for r in range(100, 120)]
    assert (one, two, three) == ([10], [20], [30])
    assert list(range(100, 120)) in calls  # the group: one call, alone
    assert sum(len(c) for c in calls) == 23


def test_a_request_past_its_budget_is_shed_and_nothing_is_learned():
    clock = Clock()
    seen = []

    def call(rows):
        seen.append(list(rows))
        clock.now += 0.5  # each call takes 500 ms (of the fake clock)
        return list(rows)

    async def main():
        batcher = Batcher(call, max_batch_size=1, max_latency_ms=100, clock=clock)
        results = await asyncio.gather(*(batcher([i]) for i in range(3)),
                                       return_exceptions=True)
        # after the overload: answered at once, like a fresh batcher
        after = await batcher([9])
        return batcher, results, after

    batcher, results, after = asyncio.run(main())
    assert results[0] == [0]
    assert all(isinstance(r, Exception) for r in results[1:])
    assert getattr(results[1], "error_code", 503) == 503
    assert after == [9] and seen == [[0], [9]]
    assert batcher.stats.shed == 2


def test_an_error_fails_every_request_of_its_call_only():
    def call(rows):
        if 13 in rows:
            raise ValueError("bad row")
        return list(rows)

    async def main():
        batcher = Batcher(call, max_batch_size=1, max_latency_ms=1000)
        return await asyncio.gather(batcher([13]), batcher([1]), return_exceptions=True)

    bad, good = asyncio.run(main())
    assert isinstance(bad, ValueError) and good == [1]


def test_empty_requests_do_not_call():
    async def main():
        return await Batcher(lambda rows: pytest.fail("called"), max_batch_size=4,
                             max_latency_ms=10)([])

    assert asyncio.run(main()) == []


def test_a_batcher_serves_one_loop_after_another():
    batcher = Batcher(lambda rows: list(rows), max_batch_size=4, max_latency_ms=100)
    assert asyncio.run(batcher([1])) == [1]
    assert asyncio.run(batcher([2, 3])) == [2, 3]  # a new loop (asyncio.run): still works
