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


# -- a client that went away, a model that miscounts --------------------------------------

def test_a_request_cancelled_while_queued_is_not_run_and_the_others_are_answered():
    calls = []

    def call(rows):
        calls.append(list(rows))
        return [r * 10 for r in rows]

    async def main():
        batcher = Batcher(call, max_batch_size=8, max_latency_ms=1000)
        tasks = [asyncio.create_task(batcher([i])) for i in (1, 2, 3)]
        await asyncio.sleep(0)  # all three queued; the batcher has not taken them yet
        assert calls == [] and not any(t.done() for t in tasks)
        tasks[1].cancel()  # its client went away
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        after = await asyncio.wait_for(batcher([4]), 5)
        return batcher, results, after

    batcher, (one, two, three), after = asyncio.run(main())
    assert isinstance(two, asyncio.CancelledError)
    assert (one, three, after) == ([10], [30], [40])
    assert calls == [[1, 3], [4]]  # the cancelled row never reached the model
    assert batcher.stats.as_dict() == {"calls": 2, "rows": 3, "shed": 0, "largest_batch": 2}


@pytest.mark.parametrize("model", ["answers", "fails"])
def test_a_request_cancelled_while_its_batch_runs_leaves_the_rest_of_the_batch_whole(model):
    """The client goes away during the model call (here the call itself cancels it): its
    result is dropped, every other request of the call gets its own value (or the error),
    and the batcher keeps serving."""
    calls, tasks = [], []

    def call(rows):
        calls.append(list(rows))
        if len(calls) == 1:
            tasks[1].cancel()
            if model == "fails":
                raise ValueError("model down")
        return [r * 10 for r in rows]

    async def main():
        batcher = Batcher(call, max_batch_size=8, max_latency_ms=1000)
        tasks.extend(asyncio.create_task(batcher(rows)) for rows in ([1], [2, 3], [4]))
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        after = await asyncio.wait_for(batcher([5]), 5)
        return results, after

    (one, two, three), after = asyncio.run(main())
    assert calls[0] == [1, 2, 3, 4]  # one call, the cancelled request's rows in it
    assert isinstance(two, asyncio.CancelledError)
    if model == "answers":
        assert (one, three) == ([10], [40])
    else:
        assert isinstance(one, ValueError) and isinstance(three, ValueError)
    assert after == [50] and calls[1:] == [[5]]


@pytest.mark.parametrize("miscount", [-1, +1], ids=["fewer", "more"])
def test_a_model_returning_the_wrong_number_of_values_fails_every_request_of_its_call(
        miscount):
    """No request gets a value shifted from its neighbour: the whole call fails, says why,
    and the next call is served."""
    calls = []

    def call(rows):
        calls.append(list(rows))
        values = [r * 10 for r in rows]
        if len(calls) == 1:
            return values[:-1] if miscount < 0 else values + [999]
        return values

    async def main():
        batcher = Batcher(call, max_batch_size=8, max_latency_ms=1000)
        results = await asyncio.wait_for(asyncio.gather(
            batcher([1]), batcher([2, 3]), batcher([4]), return_exceptions=True), 5)
        after = await asyncio.wait_for(batcher([5, 6]), 5)
        return batcher, results, after

    batcher, results, after = asyncio.run(main())
    assert calls[0] == [1, 2, 3, 4]
    assert all(isinstance(r, RuntimeError) for r in results), results
    assert all(str(r) == f"{4 + miscount} values for 4 rows" for r in results)
    assert after == [50, 60]
    assert batcher.stats.calls == 1 and batcher.stats.rows == 2  # the failed call not counted
