"""A small closed-loop HTTP/1.1 load generator: keep-alive connections, one request in flight
per connection, responses parsed by ``httptools`` (C) from ``asyncio.Protocol`` callbacks.

Each connection sends its next request from the callback that completes the previous response,
so the client costs a few microseconds per request and no coroutine switch. A run stops when it
has sent ``max_requests`` or when ``max_seconds`` have passed, whichever comes first.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import httptools
import uvloop


def build_request(path: str, *, port: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LoadResult:
    concurrency: int
    elapsed_s: float
    latencies_us: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return len(self.latencies_us)

    @property
    def failures(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies_us, q) / 1000


class _Run:
    def __init__(self, request: bytes, max_requests: int, max_seconds: float) -> None:
        self.request = request
        self.max_requests = max_requests
        self.deadline = time.perf_counter() + max_seconds
        self.sent = 0
        self.latencies_us: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.open = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def may_send(self) -> bool:
        return self.sent < self.max_requests and time.perf_counter() < self.deadline

    def closed(self, error: BaseException | None) -> None:
        self.open -= 1
        if self.finished.done():
            return
        if error is not None:
            self.finished.set_exception(error)
        elif self.open == 0:
            self.finished.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.run.open += 1
        self._send_or_close()

    def _send_or_close(self) -> None:
        assert self.transport is not None
        if self.run.may_send():
            self.run.sent += 1
            self.sent_at = time.perf_counter_ns()
            self.transport.write(self.run.request)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:  # called by the parser
        self.run.latencies_us.append((time.perf_counter_ns() - self.sent_at) / 1000)
        self.run.statuses[self.parser.get_status_code()] += 1
        if not self.parser.should_keep_alive():
            self.error = ConnectionError("the server closed a keep-alive connection")
            assert self.transport is not None
            self.transport.close()
            return
        self._send_or_close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.closed(exc or self.error)


async def _run_load(
    port: int, request: bytes, concurrency: int, max_requests: int, max_seconds: float
) -> LoadResult:
    loop = asyncio.get_running_loop()
    run = _Run(request, max_requests, max_seconds)
    started = time.perf_counter()
    transports = []
    for _ in range(concurrency):
        transport, _protocol = await loop.create_connection(
            lambda: _Connection(run), "127.0.0.1", port
        )
        transports.append(transport)
    try:
        await asyncio.wait_for(run.finished, timeout=max_seconds + 30)
    finally:
        for transport in transports:
            transport.close()
    return LoadResult(
        concurrency=concurrency,
        elapsed_s=time.perf_counter() - started,
        latencies_us=run.latencies_us,
        statuses=run.statuses,
    )


def run_load(
    port: int,
    request: bytes,
    *,
    concurrency: int = 1,
    max_requests: int = 1000,
    max_seconds: float = 10.0,
) -> LoadResult:
    """Send ``request`` to 127.0.0.1:``port`` over ``concurrency`` keep-alive connections."""
    return uvloop.run(_run_load(port, request, concurrency, max_requests, max_seconds))
