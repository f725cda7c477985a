"""The dynamic batcher on its own: with a stand-in model whose calls we can hold and count."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.errors import ApiError
from service.inference.batcher import BatcherClosed, DynamicBatcher, Overloaded
from service.inference.metrics import PredictMetrics
from service.inference.payload import _limited


class StandIn:
    """(B, 2, 2, 1) → (B, 1): each image's pixel sum; records batch sizes; can be held."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.gate.wait(10)
        self.batches.append(len(batch))
        if self.fail:
            raise RuntimeError("the model broke")
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True).astype(np.float32)


def image(value: int) -> np.ndarray:
    return np.full((2, 2, 1), value, np.uint8)


def batcher(model: StandIn, **options: Any) -> DynamicBatcher:
    settings: dict[str, Any] = {"max_batch_size": 8, "max_delay_s": 0.002, "queue_limit": 32}
    settings.update(options)
    return DynamicBatcher(
        model, run="r" * 32, metrics=PredictMetrics(CollectorRegistry()), **settings
    )


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def predict(b: DynamicBatcher, *values: int) -> list[float]:
    with b.reserve(len(values)) as reservation:
        futures = reservation.submit([image(v) for v in values])
    return [float(row[0]) for row in await asyncio.gather(*futures)]


async def queued_behind_a_held_call(
    model: StandIn, b: DynamicBatcher, values: list[int]
) -> tuple[asyncio.Future[list[float]], list[asyncio.Future[list[float]]]]:
    """A request for image 1 whose model call is held, and requests for ``values`` queued
    behind it: their futures."""
    model.gate.clear()
    first = asyncio.ensure_future(predict(b, 1))
    await asyncio.sleep(0.05)  # the first call is running (held)
    rest = [asyncio.ensure_future(predict(b, v)) for v in values]
    await asyncio.sleep(0.05)  # queued behind it
    return first, rest


def test_an_idle_batcher_dispatches_at_once() -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model, max_delay_s=5.0)  # a delay that would show
        started = time.perf_counter()
        assert await predict(b, 1) == [4.0]
        assert time.perf_counter() - started < 1.0
        await b.close()

    run(test)
    assert model.batches == [1]


def test_requests_arriving_while_the_model_is_busy_share_the_next_call() -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model)
        first, rest = await queued_behind_a_held_call(model, b, list(range(2, 12)))
        model.gate.set()
        assert await first == [4.0]
        assert [await r for r in rest] == [[4.0 * v] for v in range(2, 12)]
        await b.close()

    run(test)
    assert model.batches == [1, 8, 2]  # at most max_batch_size per call


def test_the_model_takes_its_next_batch_while_the_loop_is_busy() -> None:
    """The model thread does not wait for the event loop between calls: what queued during a
    call is computed next even while the loop is stuck in other work."""
    model = StandIn()

    async def test() -> None:
        b = batcher(model)
        first, rest = await queued_behind_a_held_call(model, b, [2, 3, 4])
        threading.Timer(0.05, model.gate.set).start()
        time.sleep(0.5)  # the loop is busy (blocked): only the model thread can move
        assert model.batches == [1, 3]
        assert await first == [4.0] and [await r for r in rest] == [[8.0], [12.0], [16.0]]
        await b.close()

    run(test)


def test_a_request_still_decoding_is_waited_for_up_to_the_delay() -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model, max_delay_s=1.0)
        late = b.reserve(1)  # a request decoding its image
        early = asyncio.ensure_future(predict(b, 1))
        await asyncio.sleep(0.05)
        assert model.batches == []  # waiting for the late one
        futures = late.submit([image(2)])
        assert await early == [4.0] and float((await futures[0])[0]) == 8.0
        # ...but no longer than the delay
        b.max_delay_s = 0.05
        stuck = b.reserve(1)
        started = time.perf_counter()
        assert await predict(b, 3) == [12.0]
        assert 0.04 < time.perf_counter() - started < 0.9
        stuck.release()
        await b.close()

    run(test)
    assert model.batches == [2, 1]


def test_a_full_queue_refuses_and_recovers() -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model, queue_limit=4)
        held = b.reserve(3)
        with pytest.raises(Overloaded, match="3 images are waiting"):
            b.reserve(2)
        held.release()
        assert await predict(b, 1, 2, 3, 4) == [4.0, 8.0, 12.0, 16.0]
        with pytest.raises(Overloaded):
            b.reserve(5)
        await b.close()
        with pytest.raises(BatcherClosed):
            b.reserve(1)

    run(test)


def test_cancelled_items_are_skipped_and_a_failing_call_fails_only_its_batch() -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model)
        model.gate.clear()
        running = asyncio.ensure_future(predict(b, 1))
        await asyncio.sleep(0.05)
        gave_up = asyncio.ensure_future(predict(b, 2))
        await asyncio.sleep(0.01)
        gave_up.cancel()
        model.fail = True
        model.gate.set()
        with pytest.raises(RuntimeError, match="the model broke"):
            await running
        model.fail = False
        assert await predict(b, 3) == [12.0]
        await b.close()

    run(test)
    assert model.batches == [1, 1]  # the cancelled image never reached the model


def test_close_finishes_what_is_queued() -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model)
        model.gate.clear()
        pending = [asyncio.ensure_future(predict(b, v)) for v in (1, 2, 3)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(b.close())
        model.gate.set()
        await closing
        assert [await p for p in pending] == [[4.0], [8.0], [12.0]]

    run(test)


def test_close_does_not_wait_forever_for_places_never_used() -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model)
        forgotten = b.reserve(1)  # a request that will never submit
        model.gate.clear()
        queued = asyncio.ensure_future(predict(b, 1))
        await asyncio.sleep(0.05)
        queued_later = b.reserve(1)
        closing = asyncio.ensure_future(b.close(grace_s=0.2))
        model.gate.set()
        await closing
        assert await queued == [4.0]
        with pytest.raises(BatcherClosed):  # the batcher has stopped
            queued_later.submit([image(2)])
        del forgotten

    run(test)


def test_a_model_thread_that_dies_leaves_nothing_waiting_and_takes_no_more_work() -> None:
    """Whatever kills the thread (here an exception that is not an Exception, as some native
    libraries raise), what it held fails at once and the batcher reports itself closed, so
    the cache loads the model again instead of handing out a batcher nobody serves."""

    class Fatal(BaseException):
        pass

    model = StandIn()

    def dies(batch: np.ndarray) -> np.ndarray:
        model.gate.wait(10)
        raise Fatal

    async def test() -> None:
        b = batcher(model)
        b.run_batch = dies
        model.gate.clear()
        running = asyncio.ensure_future(predict(b, 1))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(predict(b, 2))
        await asyncio.sleep(0.05)
        model.gate.set()
        for request in (running, queued):
            with pytest.raises(BatcherClosed):
                await request
        assert b.closed and b.depth == 0
        with pytest.raises(BatcherClosed):
            b.reserve(1)
        await b.close()

    run(test)


def test_close_while_the_thread_waits_for_decoding_requests_stops_it_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = StandIn()

    async def test() -> None:
        b = batcher(model, max_delay_s=5.0)
        decoding = b.reserve(1)  # the thread waits for it, up to 5 s
        queued = asyncio.ensure_future(predict(b, 1))
        await asyncio.sleep(0.05)
        await b.close(grace_s=0.1)
        with pytest.raises(BatcherClosed):
            await queued
        assert b._thread is not None
        b._thread.join(2)
        assert not b._thread.is_alive()
        decoding.release()

    run(test)
    assert model.batches == []
    assert not [r for r in caplog.records if "model thread" in r.getMessage()], caplog.text


def test_the_body_limit_counts_streamed_bytes() -> None:
    async def test() -> None:
        chunks = iter([b"x" * 40, b"x" * 40, b"x" * 40])

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": next(chunks), "more_body": True}

        limited = _limited(receive, 100, None)
        await limited()
        await limited()
        with pytest.raises(ApiError) as refused:
            await limited()
        assert refused.value.status_code == 413

        declared = _limited(receive, 100, 101)
        with pytest.raises(ApiError):
            await declared()  # refused before a byte is read

    run(test)
