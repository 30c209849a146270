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


async def _run(url: str, bodies: list[dict], duration: float, concurrency: int,
               max_requests: int, timeout: float) -> LoadResult:
    total = Stats()
    versions: dict[str, Stats] = {}
    cycle = itertools.cycle(bodies)
    sent = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = next(cycle)
                start = time.perf_counter()
                version = None
                try:
                    response = await client.post(url, json=body)
                    ok = response.status_code < 400
                    version = response.headers.get("x-mlstack-version")
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - start) * 1000
                stats = [total] + ([versions.setdefault(version, Stats())] if version else [])
                for s in stats:
                    if ok:
                        s.latencies_ms.append(elapsed)
                    else:
                        s.errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return LoadResult(seconds=seconds, total=total.summary(seconds),
                      by_version={v: s.summary(seconds) for v, s in sorted(versions.items())},
                      concurrency=concurrency)


def run_load(url: str, bodies: list[dict], *, duration: float = 5.0, concurrency: int = 8,
             max_requests: int = MAX_REQUESTS, timeout: float = 10.0) -> LoadResult:
    """POST the bodies (cycled) to `url` from `concurrency` clients for `duration` seconds."""
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError("load tests only target loopback addresses")
    return asyncio.run(_run(url, bodies, duration, concurrency,
                            min(max_requests, MAX_REQUESTS), timeout))
