"""Decode threads shared fairly between requests, and work dropped when its request is gone.

With a plain thread pool a request's images were one job, in arrival order: four requests of
64 large images took both threads for half a minute, an ordinary one-image request waited
behind them (29 s), and a request that timed out (504) or whose client left went on decoding.

:class:`FairDecoder` runs one image at a time, and a free thread takes the next image of the
request that has had the fewest images started so far (the earliest, among equals): the
least served first. A new request is therefore served next, so a one-image request waits for
the images already in the threads and no more, however much the others carry; requests of
equal size share the threads in turn.

A request that is cancelled (its deadline passed, its client went away) is dropped at once:
its images not yet started are never decoded, and nothing more is done for it than the
images already in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Request(Generic[Item, Result]):
    """One request's images: handed out one by one; finished when none is left or in flight."""

    def __init__(
        self,
        items: Sequence[Item],
        work: Callable[[Item], Result],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[list[Result]],
    ) -> None:
        self.items = items
        self.work = work
        self.loop = loop
        self.future = future
        self.results: list[Any] = [None] * len(items)
        self.next = 0
        self.in_flight = 0
        self.errors: dict[int, BaseException] = {}
        self.seq = 0  # arrival order, among requests equally served
        self.dropped = False  # cancelled, or an image failed: hand out nothing more

    @property
    def pending(self) -> bool:
        return not self.dropped and self.next < len(self.items)


class FairDecoder:
    """``threads`` daemon threads that run requests' items in turn; see the module's docstring.

    Args:
        threads: how many.
        name: the threads' name prefix.
    """

    def __init__(self, threads: int, *, name: str = "decode") -> None:
        self._ready: list[_Request[Any, Any]] = []  # requests with items to hand out
        self._arrivals = 0
        self._lock = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, items: Sequence[Item], work: Callable[[Item], Result]) -> list[Result]:
        """``[work(item) for item in items]`` in the threads, in turn with other requests.

        Raises:
            BaseException: what ``work`` raised for the first item (in order) that failed;
                the items after it are not started.
            asyncio.CancelledError: the caller was cancelled; nothing more is started.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Result]] = loop.create_future()
        if not items:
            return []
        request = _Request(items, work, loop, future)
        with self._lock:
            if self._closed:
                raise RuntimeError("the decoder is closed")
            self._arrivals += 1
            request.seq = self._arrivals
            self._ready.append(request)
            self._lock.notify()
        try:
            return await future
        except asyncio.CancelledError:
            self._drop(request)
            raise

    def close(self) -> None:
        """Stop handing out work (the threads end after their current item)."""
        with self._lock:
            self._closed = True
            for request in self._ready:
                request.dropped = True
            self._ready.clear()
            self._lock.notify_all()

    def _drop(self, request: _Request[Any, Any]) -> None:
        with self._lock:
            request.dropped = True
            if request in self._ready:
                self._ready.remove(request)

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._ready and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                request = min(self._ready, key=_least_served)
                index = request.next
                request.next += 1
                request.in_flight += 1
                if not request.pending:
                    self._ready.remove(request)
            try:
                result, error = request.work(request.items[index]), None
            except Exception as exc:  # handed to the request, which raises it
                result, error = None, exc
            with self._lock:
                request.in_flight -= 1
                if error is not None:
                    request.errors[index] = error
                    request.dropped = True
                    if request in self._ready:
                        self._ready.remove(request)
                else:
                    request.results[index] = result
                finished = request.in_flight == 0 and not request.pending
            if finished:
                # RuntimeError: the loop is closed, so no one is waiting any more
                with contextlib.suppress(RuntimeError):
                    request.loop.call_soon_threadsafe(_settle, request)


def _least_served(request: _Request[Any, Any]) -> tuple[int, int]:
    return request.next, request.seq


def _settle(request: _Request[Any, Any]) -> None:
    """On the loop: give the request its results, or the error of its first failed item."""
    if request.future.done():  # cancelled meanwhile
        return
    if request.errors:
        request.future.set_exception(request.errors[min(request.errors)])
    elif request.next == len(request.items):
        request.future.set_result(request.results)
    # else: dropped by cancellation; its future is already cancelled
