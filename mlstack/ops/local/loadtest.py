"""A bounded load test against a local endpoint: latency percentiles, throughput, errors.

Traffic stays on loopback; every run is bounded both in time and in request count.
Responses carrying `X-Mlstack-Version` (from the router) are also counted per version.
"""

from __future__ import annotations

import asyncio
import itertools
import time
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
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p50_ms": _round(self.percentile(50)),
            "p95_ms": _round(self.percentile(95)),
            "p99_ms": _round(self.percentile(99)),
            "throughput_rps": round(len(self.latencies_ms) / seconds, 2) if seconds else 0.0,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class LoadResult:
    seconds: float
    total: dict
    by_version: dict[str, dict]
    concurrency: int

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "concurrency": self.concurrency,
                "total": self.total, "by_version": self.by_version}


class _Recorder:
    """Sends one request and records its outcome, in total and for the version that answered
    (the router's `X-Mlstack-Version` header)."""

    def __init__(self) -> None:
        self.total = Stats()
        self.versions: dict[str, Stats] = {}

    async def call(self, client: httpx.AsyncClient, url: str, body: dict, since: float) -> None:
        version = None
        try:
            response = await client.post(url, json=body)
            ok = response.status_code < 400
            version = response.headers.get("x-mlstack-version")
        except httpx.HTTPError:
            ok = False
        elapsed = (time.perf_counter() - since) * 1000
        for stats in [self.total] + ([self.versions.setdefault(version, Stats())]
                                     if version else []):
            if ok:
                stats.latencies_ms.append(elapsed)
            else:
                stats.errors += 1

    def result(self, seconds: float, concurrency: int) -> LoadResult:
        return LoadResult(seconds=seconds, total=self.total.summary(seconds),
                          by_version={v: s.summary(seconds)
                                      for v, s in sorted(self.versions.items())},
                          concurrency=concurrency)


def _client(connections: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


async def _run_open(url: str, bodies: list[dict], duration: float, rate: float,
                    max_in_flight: int, timeout: float) -> LoadResult:
    """Open loop: requests are sent at `rate` per second whatever the answers take (as users
    do); latency counts from the scheduled send time, so queueing at the client is included.
    A request that finds `max_in_flight` requests outstanding counts as an error."""
    recorder = _Recorder()
    cycle = itertools.cycle(bodies)
    in_flight = 0
    tasks = []
    count = min(int(duration * rate), MAX_REQUESTS)
    async with _client(max_in_flight, timeout) as client:

        async def send(body: dict, scheduled: float) -> None:
            nonlocal in_flight
            try:
                await recorder.call(client, url, body, scheduled)
            finally:
                in_flight -= 1

        began = time.perf_counter()
        for i in range(count):
            scheduled = began + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                recorder.total.errors += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(send(next(cycle), scheduled)))
        await asyncio.gather(*tasks)
    # throughput over the sending window: answers that arrive during the drain still count
    return recorder.result(count / rate, max_in_flight)


async def _run_closed(url: str, bodies: list[dict], duration: float, concurrency: int,
                      max_requests: int, timeout: float) -> LoadResult:
    """Closed loop: `concurrency` clients, each sending its next request when answered."""
    recorder = _Recorder()
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
    return recorder.result(seconds, concurrency)


def run_load(url: str, bodies: list[dict], *, duration: float = 5.0, concurrency: int = 8,
             rate: float | None = None, max_requests: int = MAX_REQUESTS,
             timeout: float = 10.0) -> LoadResult:
    """POST the bodies (cycled) to `url` for `duration` seconds: at a fixed `rate` per second
    (open loop, at most `concurrency` in flight), or from `concurrency` clients as fast as
    they are answered (closed loop) when no rate is given."""
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError("load tests only target loopback addresses")
    if rate is not None:
        return asyncio.run(_run_open(url, bodies, duration, rate, concurrency, timeout))
    return asyncio.run(_run_closed(url, bodies, duration, concurrency,
                            min(max_requests, MAX_REQUESTS), timeout))


def warm_up(url: str, bodies: list[dict], count: int = 12) -> None:
    """Sequential requests before measuring: BentoML's batcher runs its first calls one at a
    time while it learns their cost, and sheds concurrent requests meanwhile."""
    with httpx.Client(timeout=30) as client:
        for body in itertools.islice(itertools.cycle(bodies), count):
            client.post(url, json=body)
