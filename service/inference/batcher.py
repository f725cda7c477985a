"""A dynamic batcher: concurrent requests' images go through the model in one call.

One batcher per loaded model, on the event loop::

    request ──reserve(n)──▶ (decode, off the loop) ──submit──▶ queue ──▶ batch task ──▶ model
       ▲                                                                   │  (one thread,
       └──────────────────── futures resolved with probabilities ◀─────────┘   run_in_executor)

- **No added latency when idle.** The batch task dispatches as soon as there is an item,
  unless other requests have already reserved places and are still decoding: then it waits
  for them, up to ``max_delay_s`` after the oldest queued item arrived, or until the batch is
  full. While the model is busy, arrivals simply queue and form the next batch.
- **One model call at a time**, in the batcher's own thread: the ``tf.function`` releases the
  GIL, so the loop keeps accepting and decoding requests while the model computes.
- **Bounded.** Images queued plus reserved never exceed ``queue_limit``; :meth:`reserve` raises
  :class:`Overloaded` instead (the route answers 503), so an overload sheds work before decoding.
- A request that gives up (timeout) cancels its futures; queued cancelled items are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
        self.release()
        return self.batcher._enqueue(arrays)

    def release(self) -> None:
        if self._open:
            self._open = False
            self.batcher._reserved -= self.count
            self.batcher._wake()

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
        self._items: deque[_Item] = deque()
        self._running: list[_Item] = []  # the batch in the model right now
        self._reserved = 0
        self._closed = False
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"predict-{run[:8]}")
        self._batch_size = metrics.batch_size.labels(run)
        self._queue_seconds = metrics.queue_seconds.labels(run)
        self._compute_seconds = metrics.compute_seconds.labels(run)
        self._images = metrics.images.labels(run)

    @property
    def depth(self) -> int:
        """Images queued and reserved."""
        return len(self._items) + self._reserved

    def reserve(self, count: int) -> Reservation:
        """Hold ``count`` places for a request's images while they are decoded.

        Raises:
            Overloaded: the queue cannot take them.
            BatcherClosed: the batcher is closing.
        """
        if self._closed:
            raise BatcherClosed
        if self.depth + count > self.queue_limit:
            raise Overloaded(
                f"{self.depth} images are waiting for this model (limit {self.queue_limit})"
            )
        self._reserved += count
        return Reservation(self, count)

    def _enqueue(self, arrays: Sequence[np.ndarray]) -> list[asyncio.Future[np.ndarray]]:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.done():
            raise BatcherClosed  # closed while this request was decoding
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop(), name="dynamic-batcher")
        now = time.perf_counter()
        futures = []
        for array in arrays:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._items.append(_Item(array, future, now))
            futures.append(future)
        self._wake()
        return futures

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def close(self, grace_s: float = 30.0) -> None:
        """Refuse new work, finish what is queued (and what reserved places submits), stop.

        After ``grace_s`` the batch task is cancelled: images still queued fail with
        :class:`BatcherClosed`, and places reserved but never used are forgotten.
        """
        self._closed = True
        self._wake()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                log.warning("batcher closed with %d image(s) left after %g s", self.depth, grace_s)
                self._task.cancel()
        for item in [*self._running, *self._items]:
            if not item.future.done():
                item.future.set_exception(BatcherClosed())
        self._items.clear()
        self._executor.shutdown(wait=False)

    async def _wait(self, timeout: float | None) -> None:
        assert self._wakeup is not None
        self._wakeup.clear()
        if timeout is None:
            await self._wakeup.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                if self._closed and self._reserved == 0:
                    return
                await self._wait(None)
                continue
            # Others are decoding images they have places for: give them until the oldest
            # queued item has waited max_delay_s (no wait at all when nobody else is coming).
            while len(self._items) < self.max_batch_size and self._reserved > 0:
                left = self._items[0].enqueued + self.max_delay_s - time.perf_counter()
                if left <= 0:
                    break
                await self._wait(left)
            batch = self._running = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            for item in batch:
                self._queue_seconds.observe(started - item.enqueued)
            try:
                stacked = np.stack([item.array for item in batch])
                probs = await loop.run_in_executor(self._executor, self.run_batch, stacked)
            except Exception as exc:
                log.exception("batched model call of %d image(s) failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._compute_seconds.observe(time.perf_counter() - started)
            self._batch_size.observe(len(batch))
            self._images.inc(len(batch))
            for item, row in zip(batch, probs, strict=True):
                if not item.future.done():
                    item.future.set_result(row)

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._items and len(batch) < self.max_batch_size:
            item = self._items.popleft()
            if not item.future.done():  # a request that timed out cancelled it
                batch.append(item)
        return batch
