"""A small, cheap HTTP/1.1 load generator on raw asyncio streams (loopback only).

The client shares two cores with the server it measures, so it has to be light: no HTTP
library, keep-alive connections, a pre-encoded request per body. Every run is bounded in time
and in request count.

- closed loop: `concurrency` clients, each sending its next request when the previous is
  answered (throughput at a given concurrency);
- open loop: requests sent at a fixed rate whatever the answers take, at most `max_in_flight`
  at once (latency at a throughput target; latency counts from the scheduled send time).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.common import percentile

MAX_REQUESTS = 100_000
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadRun:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    # with keep=True: (scheduled send time from the start s, latency ms or None, status)
    records: list[tuple[float, float | None, int]] | None = None

    def summary(self) -> dict:
        ok = len(self.latencies_ms)
        return {
            "requests": ok + self.errors,
            "errors": self.errors,
            "throughput_rps": ok / self.seconds if self.seconds else 0.0,
            "p50_ms": percentile(self.latencies_ms, 50),
            "p95_ms": percentile(self.latencies_ms, 95),
            "p99_ms": percentile(self.latencies_ms, 99),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, payload: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if headers.get("connection") == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _payloads(url: str, bodies: list[dict]) -> tuple[str, int, list[bytes]]:
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise ValueError("the bench only sends load to loopback addresses")
    out = []
    for body in bodies:
        data = json.dumps(body).encode()
        out.append(f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                   f"\r\n".encode() + data)
    return parts.hostname, parts.port or 80, out


async def _one(conn: Connection, payload: bytes, run: LoadRun, started: float,
               timeout: float, origin: float = 0.0) -> None:
    try:
        status = await asyncio.wait_for(conn.request(payload), timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        conn.close()
        run.errors += 1
        if run.records is not None:
            run.records.append((started - origin, None, 0))
        return
    run.statuses[status] = run.statuses.get(status, 0) + 1
    latency = (time.perf_counter() - started) * 1000
    if run.records is not None:
        run.records.append((started - origin, latency, status))
    if status < 400:
        run.latencies_ms.append(latency)
    else:
        run.errors += 1


async def _closed(url, bodies, concurrency, duration, max_requests, timeout) -> LoadRun:
    host, port, payloads = _payloads(url, bodies)
    cycle = itertools.cycle(payloads)
    run = LoadRun(seconds=0.0)
    sent = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal sent
        conn = Connection(host, port)
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                await _one(conn, next(cycle), run, time.perf_counter(), timeout)
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - began
    return run


async def _open(url, bodies, rate, duration, max_in_flight, timeout, keep=False) -> LoadRun:
    host, port, payloads = _payloads(url, bodies)
    cycle = itertools.cycle(payloads)
    run = LoadRun(seconds=duration, records=[] if keep else None)
    idle: list[Connection] = []
    in_flight = 0
    tasks = []

    async def send(payload: bytes, scheduled: float) -> None:
        nonlocal in_flight
        conn = idle.pop() if idle else Connection(host, port)
        try:
            await _one(conn, payload, run, scheduled, timeout, began)
        finally:
            in_flight -= 1
            idle.append(conn)

    count = min(int(duration * rate), MAX_REQUESTS)
    began = time.perf_counter()
    for i in range(count):
        scheduled = began + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            run.errors += 1  # the client would have had to queue it: counted as failed
            if run.records is not None:
                run.records.append((scheduled - began, None, 0))
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(send(next(cycle), scheduled)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    # throughput over the sending window: answers that arrive during the drain still count
    run.seconds = count / rate
    return run


def closed_loop(url: str, bodies: list[dict], *, concurrency: int, duration: float,
                max_requests: int = MAX_REQUESTS, timeout: float = 10.0) -> dict:
    run = asyncio.run(_closed(url, bodies, concurrency, duration,
                              min(max_requests, MAX_REQUESTS), timeout))
    return run.summary()


def open_loop(url: str, bodies: list[dict], *, rate: float, duration: float,
              max_in_flight: int = 64, timeout: float = 10.0) -> dict:
    return asyncio.run(_open(url, bodies, rate, duration, max_in_flight, timeout)).summary()


def open_loop_windows(url: str, bodies: list[dict], *, rate: float, duration: float,
                      max_in_flight: int = 64, timeout: float = 10.0) -> dict:
    """open_loop, plus one summary per second of sending (by scheduled send time): how
    latency and errors evolve, say right after an overload."""
    run = asyncio.run(_open(url, bodies, rate, duration, max_in_flight, timeout, keep=True))
    windows = []
    for second in range(int(duration)):
        got = [r for r in run.records if second <= r[0] < second + 1]
        ok = [latency for _, latency, status in got if latency is not None and status < 400]
        windows.append({"requests": len(got), "errors": len(got) - len(ok),
                        "refused": sum(status == 503 for _, _, status in got),
                        "p50_ms": percentile(ok, 50), "p95_ms": percentile(ok, 95),
                        "p99_ms": percentile(ok, 99)})
    return {**run.summary(), "windows": windows}


def open_loop_latencies(url: str, bodies: list[dict], *, rate: float, duration: float,
                        max_in_flight: int = 64, timeout: float = 10.0) -> tuple[dict, list]:
    """open_loop, and the latency (ms) of each answered request: a percentile over several
    runs pooled is steadier than the median of each run's (a p99 of 400 requests is their
    4th slowest)."""
    run = asyncio.run(_open(url, bodies, rate, duration, max_in_flight, timeout, keep=True))
    ok = [latency for _, latency, status in run.records or []
          if latency is not None and status < 400]
    return run.summary(), ok


def warm_up(url: str, bodies: list[dict], count: int = 20) -> None:
    """Sequential requests first: BentoML's batcher learns the call cost from its first
    calls, and sheds concurrent requests meanwhile."""
    asyncio.run(_closed(url, bodies, 1, 60.0, count, 30.0))
