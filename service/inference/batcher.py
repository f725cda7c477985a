"""A dynamic batcher: concurrent requests' images go through the model in one call.

One batcher per loaded model; requests on the event loop, the model in the batcher's thread::

    request ──reserve(n)──▶ decode ──submit──▶ queue ──▶ model thread: take a batch, compute
       ▲                                                                   │
       └──────────── futures resolved, one loop callback per batch ◀───────┘

- **The model thread takes its own batches.** When a call ends it takes what queued meanwhile
  and computes again at once; the loop only hears of the results (one ``call_soon_threadsafe``
  per batch). Taking batches on the loop instead left the model idle for a loop round trip
  after every call, behind whatever else the loop had ready: a third of the time under 16
  clients (docs/benchmarks.md, "The model thread takes its own batches").
- **No added latency when idle.** An item is dispatched as soon as it is queued, unless other
  requests have already reserved places and are still decoding: then the thread waits for
  them, up to ``max_delay_s`` after the oldest queued item arrived, or until the batch is
  full. While the model is busy, arrivals simply queue and form the next batch.
- **One model call at a time**, and the model's kernels release the GIL, so the loop keeps
  accepting and decoding requests while the model computes.
- **Bounded.** Images queued plus reserved never exceed ``queue_limit``; :meth:`reserve` raises
  :class:`Overloaded` instead (the route answers 503), so an overload sheds work before decoding.
- A request that gives up (timeout) cancels its futures; queued cancelled items are skipped.

The queue, the reserved count and the flags are shared by the loop and the thread under one
lock (``_ready``), held only to add, count or take items, never across a model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.inference.metrics import PredictMetrics

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The batcher's queue is full."""


class BatcherClosed(Exception):
    """The batcher was closed (its model was evicted); resolve the model again."""


@dataclass(slots=True)
class _Item:
    array: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float


@dataclass
class Reservation:
    """Places in a batcher's queue for one request's images, held while they are decoded.

    Use as a context manager: places not submitted are given back when it exits.
    """

    batcher: DynamicBatcher
    count: int
    _open: bool = field(default=True, repr=False)

    def submit(self, arrays: Sequence[np.ndarray]) -> list[asyncio.Future[np.ndarray]]:
        """Queue the decoded images (at most the reserved count); one future per image.

        Raises:
            BatcherClosed: the batcher stopped meanwhile (its model was evicted).
        """
        if not self._open:
            raise RuntimeError("this reservation was already used")
        if len(arrays) > self.count:
            raise ValueError(f"reserved {self.count} places, submitted {len(arrays)} images")
        self._open = False
        # One step under the lock: the model thread never sees the places given back before
        # the images are queued (it would dispatch without them).
        return self.batcher._enqueue(arrays, unreserve=self.count)

    def release(self) -> None:
        """Give the places back unused (a request that failed to decode, or gave up)."""
        if self._open:
            self._open = False
            self.batcher._unreserve(self.count)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class DynamicBatcher:
    """Groups images from concurrent requests into batched calls of ``run_batch``.

    Args:
        run_batch: (B, H, W, C) uint8 → (B, K) float32; runs in the batcher's thread.
        run: the run id, for the metrics' label and the thread's name.
        max_batch_size: images per call at most.
        max_delay_s: longest wait for a fuller batch while more images are on their way.
        queue_limit: images queued plus reserved at most.
        metrics: where batch sizes, queue and compute times go.
    """

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        *,
        run: str,
        max_batch_size: int,
        max_delay_s: float,
        queue_limit: int,
        metrics: PredictMetrics,
    ) -> None:
        if max_batch_size < 1 or queue_limit < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and queue_limit must be >= 1, max_delay_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue_limit = queue_limit
        self._name = f"predict-{run[:8]}"
        self._ready = threading.Condition(threading.Lock())
        self._items: deque[_Item] = deque()
        self._running: list[_Item] = []  # the batch in the model right now
        self._reserved = 0
        self._closed = False  # no new work; the thread stops once the queue is empty
        self._abandoned = False  # stop after the current call, whatever is left
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None  # resolved when the thread ends
        self._batch_size = metrics.batch_size.labels(run)
        self._queue_seconds = metrics.queue_seconds.labels(run)
        self._compute_seconds = metrics.compute_seconds.labels(run)
        self._images = metrics.images.labels(run)

    @property
    def depth(self) -> int:
        """Images queued and reserved."""
        return len(self._items) + self._reserved

    @property
    def closed(self) -> bool:
        """It takes no more work: closed, or its thread ended (the model must be reloaded)."""
        return self._closed

    def reserve(self, count: int) -> Reservation:
        """Hold ``count`` places for a request's images while they are decoded.

        Raises:
            Overloaded: the queue cannot take them.
            BatcherClosed: the batcher is closing.
        """
        with self._ready:
            if self._closed:
                raise BatcherClosed
            if self.depth + count > self.queue_limit:
                raise Overloaded(
                    f"{self.depth} images are waiting for this model (limit {self.queue_limit})"
                )
            self._reserved += count
        return Reservation(self, count)

    def _unreserve(self, count: int) -> None:
        with self._ready:
            self._reserved -= count
            self._ready.notify()

    def _enqueue(
        self, arrays: Sequence[np.ndarray], *, unreserve: int
    ) -> list[asyncio.Future[np.ndarray]]:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures: list[asyncio.Future[np.ndarray]] = []
        with self._ready:
            self._reserved -= unreserve
            if self._abandoned or (self._stopped is not None and self._stopped.done()):
                self._ready.notify()
                raise BatcherClosed  # closed while this request was decoding
            if self._loop is not None and loop is not self._loop:
                self._ready.notify()
                if self._loop.is_closed():  # its loop ended without close(): load it again
                    raise BatcherClosed
                raise RuntimeError("a batcher serves the one event loop it started on")
            if self._thread is None:
                self._start(loop)
            for array in arrays:
                future: asyncio.Future[np.ndarray] = loop.create_future()
                self._items.append(_Item(array, future, now))
                futures.append(future)
            self._ready.notify()
        return futures

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        # A daemon: a process that exits without closing its models is not held up by one.
        thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._loop, self._stopped = loop, loop.create_future()
        try:
            thread.start()
        except BaseException:
            self._loop = self._stopped = None
            raise
        self._thread = thread

    async def close(self, grace_s: float = 30.0) -> None:
        """Refuse new work, finish what is queued (and what reserved places submits), stop.

        After ``grace_s`` the thread stops after its current call: images still queued fail
        with :class:`BatcherClosed`, and places reserved but never used are forgotten.
        """
        with self._ready:
            self._closed = True
            self._ready.notify()
        if self._stopped is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._stopped), grace_s)
            except TimeoutError:
                log.warning("batcher closed with %d image(s) left after %g s", self.depth, grace_s)
        _fail(self._drain(), BatcherClosed())

    def _drain(self) -> list[_Item]:
        """Stop taking work (the thread stops after its current call) and take what it had:
        the batch in the model and the queue."""
        with self._ready:
            self._closed = self._abandoned = True
            self._ready.notify()
            left = [*self._running, *self._items]
            self._running, self._items = [], deque()
        return left

    # --- the model thread ----------------------------------------------------------------

    def _serve(self) -> None:
        assert self._loop is not None and self._stopped is not None
        error: BaseException = BatcherClosed()
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._compute(batch)
                del batch  # nothing of the last batch is held while the thread waits
        except BaseException as exc:  # not a failed model call (_compute answers those)
            log.exception("the model thread of %s stopped", self._name)
            if isinstance(exc, Exception):
                error = exc
        finally:
            # Whatever ends the thread, nothing is left waiting on it: what it had fails, and
            # the batcher takes no more work, so the cache loads the model again.
            if left := self._drain():
                self._call_loop(_fail, left, error)
            self._call_loop(_resolve, self._stopped)

    def _next_batch(self) -> list[_Item] | None:
        """The next batch to compute; None when the thread should stop."""
        assert self._loop is not None
        with self._ready:
            while not self._items:
                if self._abandoned or (self._closed and self._reserved == 0):
                    return None
                if self._loop.is_closed():  # its loop ended without close(): nobody is left
                    return None
                self._ready.wait(1.0)
            # Others are decoding images they have places for: give them until the oldest
            # queued item has waited max_delay_s (no wait at all when nobody else is coming).
            while self._items and len(self._items) < self.max_batch_size and self._reserved > 0:
                left = self._items[0].enqueued + self.max_delay_s - time.perf_counter()
                if left <= 0 or self._abandoned:
                    break
                self._ready.wait(left)
            if self._abandoned:
                return None
            batch: list[_Item] = []
            while self._items and len(batch) < self.max_batch_size:
                item = self._items.popleft()
                if not item.future.done():  # a request that timed out cancelled it
                    batch.append(item)
            self._running = batch
            return batch

    def _compute(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        for item in batch:
            self._queue_seconds.observe(started - item.enqueued)
        try:
            probs = self.run_batch(np.stack([item.array for item in batch]))
            if len(probs) != len(batch):
                raise ValueError(f"the model answered {len(probs)} rows for {len(batch)} images")
        except Exception as exc:
            log.exception("batched model call of %d image(s) failed", len(batch))
            self._call_loop(_fail, batch, exc)
        else:
            self._compute_seconds.observe(time.perf_counter() - started)
            self._batch_size.observe(len(batch))
            self._images.inc(len(batch))
            self._call_loop(_deliver, batch, probs)
        self._running = []

    def _call_loop(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for these
            self._loop.call_soon_threadsafe(callback, *args)


def _deliver(batch: list[_Item], probs: np.ndarray) -> None:
    for item, row in zip(batch, probs, strict=True):
        if not item.future.done():
            item.future.set_result(row)


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
