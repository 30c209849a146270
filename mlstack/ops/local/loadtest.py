"""A bounded load test against a local endpoint: latency percentiles, throughput, errors.

Traffic stays on loopback; every run is bounded both in time and in request count.
Responses carrying `X-Mlstack-Version` (from the router) are also counted per version.
Beside the figures, how busy the machine was: load average per CPU before and after, the
CPU time used while the load ran, and the load generator's own lag (how late it sent
requests against their schedule), so a reader can tell a slow service from a busy machine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

MAX_REQUESTS = 200_000


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    @property
    def samples(self) -> int:
        """Answered requests: the latencies a percentile is computed from."""
        return len(self.latencies_ms)

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        data = sorted(self.latencies_ms)
        rank = q / 100 * (len(data) - 1)
        low = int(rank)
        high = min(low + 1, len(data) - 1)
        return data[low] + (data[high] - data[low]) * (rank - low)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def summary(self, seconds: float) -> dict:
        return {
            "requests": self.requests,
            "samples": self.samples,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p50_ms": _round(self.percentile(50)),
            "p95_ms": _round(self.percentile(95)),
            "p99_ms": _round(self.percentile(99)),
            "throughput_rps": round(len(self.latencies_ms) / seconds, 2) if seconds else 0.0,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Contention:
    """How busy the machine was around a load test, and how late the generator sent."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1
        self.load_before = os.getloadavg()[0]
        self.cpu_before = _cpu_times()
        self.lags_ms: list[float] = []

    def summary(self) -> dict:
        after = _cpu_times()
        busy = None
        if self.cpu_before and after and after[1] > self.cpu_before[1]:
            busy = (after[0] - self.cpu_before[0]) / (after[1] - self.cpu_before[1])
        lags = Stats(latencies_ms=self.lags_ms)
        return {
            "cpus": self.cpus,
            "load_per_cpu_before": round(self.load_before / self.cpus, 2),
            "load_per_cpu_after": round(os.getloadavg()[0] / self.cpus, 2),
            "cpu_busy_during": None if busy is None else round(busy, 3),
            "sender_lag_p50_ms": _round(lags.percentile(50)),
            "sender_lag_p99_ms": _round(lags.percentile(99)),
            "sender_lag_max_ms": _round(max(self.lags_ms)) if self.lags_ms else None,
        }


@dataclass
class LoadResult:
    seconds: float
    total: dict
    by_version: dict[str, dict]
    concurrency: int
    contention: dict = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)  # the raw latencies, in total
    version_stats: dict[str, Stats] = field(default_factory=dict)
    unattributed_errors: int = 0  # failed requests no version answered (no response)
    # Each error in `total` is one of: an answer of 400 or above (in `statuses`), a request
    # sent that got no HTTP answer (`unanswered`: refused, reset, timed out), or, in the open
    # loop, a request not sent because `concurrency` were outstanding (`unsent`: the client's
    # own limit, which says the service was slow, not that it failed a request).
    statuses: dict[int, int] = field(default_factory=dict)  # the answers, by status code
    unanswered: int = 0
    unsent: int = 0

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "concurrency": self.concurrency,
                "total": self.total, "by_version": self.by_version,
                "contention": self.contention}


class Recorder:
    """Sends one request and records its outcome, in total and for the version that answered
    (the router's `X-Mlstack-Version` header)."""

    def __init__(self) -> None:
        self.total = Stats()
        self.versions: dict[str, Stats] = {}
        self.statuses: dict[int, int] = {}
        self.unanswered = self.unsent = 0

    async def call(self, client: httpx.AsyncClient, url: str, body: dict, since: float) -> None:
        version = None
        try:
            response = await client.post(url, json=body)
            ok = response.status_code < 400
            version = response.headers.get("x-mlstack-version")
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        except httpx.HTTPError:
            ok = False
            self.unanswered += 1
        elapsed = (time.perf_counter() - since) * 1000
        for stats in [self.total] + ([self.versions.setdefault(version, Stats())]
                                     if version else []):
            if ok:
                stats.latencies_ms.append(elapsed)
            else:
                stats.errors += 1

    def result(self, seconds: float, concurrency: int, contention: Contention) -> LoadResult:
        attributed = sum(s.errors for s in self.versions.values())
        return LoadResult(seconds=seconds, total=self.total.summary(seconds),
                          by_version={v: s.summary(seconds)
                                      for v, s in sorted(self.versions.items())},
                          concurrency=concurrency, contention=contention.summary(),
                          stats=self.total, version_stats=dict(self.versions),
                          unattributed_errors=self.total.errors - attributed,
                          statuses=dict(sorted(self.statuses.items())),
                          unanswered=self.unanswered, unsent=self.unsent)


def _client(connections: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


async def _run_open(url: str, bodies: list[dict], duration: float, rate: float,
                    max_in_flight: int, timeout: float, max_duration: float,
                    done: Callable[[Recorder], bool] | None) -> LoadResult:
    """Open loop: requests are sent at `rate` per second whatever the answers take (as users
    do); latency counts from the scheduled send time, so queueing at the client is included.
    A request that finds `max_in_flight` requests outstanding counts as an error. After
    `duration`, sending goes on while `done(recorder)` is false, up to `max_duration`."""
    recorder = Recorder()
    contention = Contention()
    cycle = itertools.cycle(bodies)
    in_flight = 0
    tasks = []
    minimum = min(int(duration * rate), MAX_REQUESTS)
    bound = max(minimum, min(int(max_duration * rate), MAX_REQUESTS))
    check_every = max(1, int(rate / 4))
    count = 0
    async with _client(max_in_flight, timeout) as client:

        async def send(body: dict, scheduled: float) -> None:
            nonlocal in_flight
            try:
                await recorder.call(client, url, body, scheduled)
            finally:
                in_flight -= 1

        began = time.perf_counter()
        for i in range(bound):
            if i >= minimum and (done is None or (i % check_every == 0 and done(recorder))):
                break
            count = i + 1
            scheduled = began + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            contention.lags_ms.append(max(0.0, (time.perf_counter() - scheduled) * 1000))
            if in_flight >= max_in_flight:
                recorder.total.errors += 1
                recorder.unsent += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(send(next(cycle), scheduled)))
        await asyncio.gather(*tasks)
    # throughput over the sending window: answers that arrive during the drain still count
    return recorder.result(count / rate, max_in_flight, contention)


async def _run_closed(url: str, bodies: list[dict], duration: float, concurrency: int,
                      max_requests: int, timeout: float) -> LoadResult:
    """Closed loop: `concurrency` clients, each sending its next request when answered."""
    recorder = Recorder()
    contention = Contention()
    cycle = itertools.cycle(bodies)
    sent = 0
    deadline = time.perf_counter() + duration
    async with _client(concurrency, timeout) as client:

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                await recorder.call(client, url, next(cycle), time.perf_counter())

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return recorder.result(seconds, concurrency, contention)


def run_load(url: str, bodies: list[dict], *, duration: float = 5.0, concurrency: int = 8,
             rate: float | None = None, max_requests: int = MAX_REQUESTS,
             timeout: float = 10.0, max_duration: float | None = None,
             done: Callable[[Recorder], bool] | None = None) -> LoadResult:
    """POST the bodies (cycled) to `url` for `duration` seconds: at a fixed `rate` per second
    (open loop, at most `concurrency` in flight), or from `concurrency` clients as fast as
    they are answered (closed loop) when no rate is given. Open loop only: after `duration`
    the load goes on until `done(recorder)` (its `.total` and `.versions` Stats so far), up
    to `max_duration` seconds in all."""
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError("load tests only target loopback addresses")
    if rate is not None:
        return asyncio.run(_run_open(url, bodies, duration, rate, concurrency, timeout,
                                     max(duration, max_duration or duration), done))
    return asyncio.run(_run_closed(url, bodies, duration, concurrency,
                            min(max_requests, MAX_REQUESTS), timeout))


def warm_up(url: str, bodies: list[dict], count: int = 12) -> None:
    """Sequential requests before measuring: BentoML's batcher runs its first calls one at a
    time while it learns their cost, and sheds concurrent requests meanwhile."""
    with httpx.Client(timeout=30) as client:
        for body in itertools.islice(itertools.cycle(bodies), count):
            client.post(url, json=body)
