"""Load generators for the predict benchmarks: closed loop (clients that wait for their answers)
and open loop (requests sent at Poisson arrival times, whatever the server's pace).

A :class:`Target` is one server's predict route: ours or a peer's (``benchmarks/peers``). Every
request carries one image; a target says how to wrap it (a multipart field, or a bare body).

Two clients:
- ``httpx``: a real HTTP client, what most users' code would use; its own CPU cost is high on a
  2-core machine, where it competes with the server.
- ``minimal``: HTTP/1.1 by hand on asyncio streams (a few µs per request), which shows what the
  server sustains when the load generator's cost is taken out.

Open-loop latency is measured from each request's *scheduled* send time, not from when a
connection was free to send it, so a server that falls behind is charged for the queue it builds
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass(frozen=True)
class Target:
    """One server's predict route, and how it wants a one-image request."""

    name: str
    url: str  # http://host:port
    path: str  # with its query
    field: str | None  # the multipart field of the image; None: a bare image/png body
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, image: bytes) -> tuple[bytes, str]:
        """The request body and its content type for one PNG."""
        if self.field is None:
            return image, "image/png"
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{self.field}"; '
            f'filename="image.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        return head + image + f"\r\n--{boundary}--\r\n".encode(), (
            f"multipart/form-data; boundary={boundary}"
        )

    def raw_requests(self, images: Sequence[bytes]) -> list[bytes]:
        """Whole HTTP/1.1 requests, built once, for the minimal client."""
        host = self.url.removeprefix("http://")
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        out = []
        for image in images:
            body, content_type = self.body(image)
            out.append(
                (f"POST {self.path} HTTP/1.1\r\nHost: {host}\r\n{extra}"
                 f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                + body
            )  # fmt: skip
        return out


def summarise(latencies: Sequence[float], elapsed: float, errors: int = 0) -> dict[str, float]:
    """Images/s (one image per request) and latency percentiles in ms."""
    if not latencies:
        return {"images_per_s": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"),
                "errors": float(errors)}  # fmt: skip
    ms = np.asarray(latencies) * 1e3
    return {
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": float(errors),
    }


# --- one connection, by hand -----------------------------------------------------------------

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


class Connection:
    """One keep-alive HTTP/1.1 connection; :meth:`send` returns whether the answer was a 200."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, request: bytes) -> bool:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = _LENGTH.search(head)
        if length:
            await self.reader.readexactly(int(length.group(1)))
        elif b"chunked" in head.lower():
            await self._skip_chunks()
        return head.startswith(b"HTTP/1.1 200")

    async def _skip_chunks(self) -> None:
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            await self.reader.readexactly(size + 2)
            if size == 0:
                return

    def close(self) -> None:
        self.writer.close()


# --- closed loop -----------------------------------------------------------------------------

ClientLoop = Callable[[Target, Sequence[bytes], float, int, int, list[float]], Awaitable[int]]


async def httpx_client(
    target: Target, images: Sequence[bytes], stop: float, first: int, step: int,
    latencies: list[float],
) -> int:  # fmt: skip
    """One keep-alive httpx client sending requests back to back until ``stop``."""
    bodies = [target.body(i) for i in images]
    done, i = 0, first
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, limits=limits) as c:
        while time.perf_counter() < stop:
            body, content_type = bodies[i % len(bodies)]
            t = time.perf_counter()
            r = await c.post(target.path, content=body, headers={"Content-Type": content_type})
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"{target.name}: {r.status_code}: {r.text[:300]}")
            done, i = done + 1, i + step
    return done


async def minimal_client(
    target: Target, images: Sequence[bytes], stop: float, first: int, step: int,
    latencies: list[float],
) -> int:  # fmt: skip
    """One keep-alive connection by hand, requests back to back until ``stop``."""
    requests = target.raw_requests(images)
    connection = await Connection.open(target.url)
    done, i = 0, first
    try:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            if not await connection.send(requests[i % len(requests)]):
                raise RuntimeError(f"{target.name}: a request failed")
            latencies.append(time.perf_counter() - t)
            done, i = done + 1, i + step
    finally:
        connection.close()
    return done


CLIENTS: dict[str, ClientLoop] = {"httpx": httpx_client, "minimal": minimal_client}


async def closed_loop(
    client: ClientLoop, target: Target, images: Sequence[bytes], *, clients: int, seconds: float
) -> dict[str, float]:
    """``clients`` concurrent clients, each waiting for its answer before the next request."""
    latencies: list[float] = []
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(
        *(client(target, images, stop, i, clients, latencies) for i in range(clients))
    )
    return summarise(latencies, time.perf_counter() - started)


# --- open loop -------------------------------------------------------------------------------


async def open_loop(
    target: Target,
    images: Sequence[bytes],
    *,
    rate: float,
    seconds: float,
    seed: int = 0,
    max_connections: int = 512,
) -> dict[str, float]:
    """Requests at Poisson arrivals of ``rate`` per second for ``seconds``, each on an idle
    keep-alive connection (a new one when none is idle, up to ``max_connections``; past that a
    request waits for one, and that wait counts in its latency)."""
    requests = target.raw_requests(images)
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, int(rate * seconds * 1.2) + 10)
    idle: list[Connection] = []
    opened = 0
    free = asyncio.Condition()
    latencies: list[float] = []
    errors = 0

    async def one(index: int, scheduled: float) -> None:
        nonlocal opened, errors
        async with free:
            while not idle and opened >= max_connections:
                await free.wait()
            if idle:
                connection = idle.pop()
            else:
                opened += 1
                connection = None
        try:
            if connection is None:
                connection = await Connection.open(target.url)
            ok = await connection.send(requests[index % len(requests)])
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            async with free:
                opened -= 1
                free.notify()
            return
        latencies.append(time.perf_counter() - scheduled)
        errors += not ok
        async with free:
            idle.append(connection)
            free.notify()

    tasks = []
    started = time.perf_counter()
    when = started
    for index, gap in enumerate(gaps):
        when += gap
        if when - started > seconds:
            break
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, when)))
    offered = len(tasks) / seconds
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    for connection in idle:
        connection.close()
    result = summarise(latencies, elapsed, errors)
    result.update(offered_per_s=offered, connections=float(opened))
    return result


def highest_sustained(sweep: Sequence[dict[str, float]], p99_ms: float) -> float | None:
    """The highest offered rate whose p99 stayed within ``p99_ms`` with no errors (and all rates
    below it too: a sweep is a curve, not a set of lucky points)."""
    best = None
    for point in sorted(sweep, key=lambda p: p["offered_per_s"]):
        if point["errors"] or not point["p99_ms"] <= p99_ms:
            break
        best = point["offered_per_s"]
    return best


def median_of(points: Sequence[dict[str, float]], key: str) -> float:
    return statistics.median(p[key] for p in points)
