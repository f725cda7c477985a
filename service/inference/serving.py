"""Running a request's images through a model: load it, decode, batch, wait, within a deadline.

The HTTP side (reading the body, shaping the answer) is in :mod:`service.predict.handlers`;
this is what every predict route shares once it holds the images.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import numpy as np
from starlette.requests import Request

from core.images import image_pixels, too_many_pixels_message
from service.errors import ApiError, ErrorDetail
from service.inference.batcher import BatcherClosed, Overloaded
from service.inference.cache import LoadedModel, ModelRef, ModelUnavailable
from service.inference.images import ImageRejected
from service.inference.payload import EncodedImage
from service.inference.runtime import Inference

RETRY_AFTER_S = 1
# A 32x32 PNG is ~3 KB, a JPEG ~1 KB: 64 KiB holds any honest request of 4,096 pixels.
INLINE_DECODE_MAX_BYTES = 64 * 1024
T = TypeVar("T")


async def predict_images(
    inference: Inference, ref: ModelRef, images: Sequence[EncodedImage]
) -> tuple[LoadedModel, list[np.ndarray]]:
    """Load (or find) the model, decode the images off the loop, and batch them through it,
    all within ``predict_timeout_s``.

    Returns:
        The model that answered, and each image's probabilities, in order.

    Raises:
        ApiError: 503 (the model's queue is full, or it cannot be loaded), 504 (the
            deadline passed), or the status of the first image that cannot be used.
    """
    pixels = check_pixels(inference, images)
    # On the loop only what is small both ways: few pixels by the headers, and few bytes (a
    # tiny image padded with megabytes of scans or chunks would decode slowly however small).
    inline = (
        pixels is not None
        and pixels <= inference.settings.predict_inline_decode_pixels
        and sum(len(image.data) for image in images) <= INLINE_DECODE_MAX_BYTES
    )
    timeout = inference.settings.predict_timeout_s
    try:
        async with asyncio.timeout(timeout):
            while True:
                model = await _model(inference, ref)
                try:
                    reservation = model.batcher.reserve(len(images))
                except BatcherClosed:
                    continue  # evicted meanwhile: load it again
                except Overloaded as exc:
                    inference.metrics.refused.labels("overloaded").inc()
                    raise ApiError(
                        503,
                        f"Too many images are waiting for this model; try again shortly ({exc})",
                        code="overloaded",
                        headers={"Retry-After": str(RETRY_AFTER_S)},
                    ) from None
                with reservation:
                    try:
                        arrays = await inference.decode(images, model.spec, inline=inline)
                    except ImageRejected as exc:
                        raise _image_error(exc) from None
                    try:
                        futures = reservation.submit(arrays)
                    except BatcherClosed:
                        continue  # evicted while decoding: load it again
                return model, list(await asyncio.gather(*futures))
    except TimeoutError:
        inference.metrics.refused.labels("timeout").inc()
        raise ApiError(
            504,
            f"The prediction did not finish within {timeout:g} s (predict_timeout_s)",
            code="timeout",
        ) from None


def check_pixels(inference: Inference, images: Sequence[EncodedImage]) -> int | None:
    """Refuse, from the image headers alone, what would take too long to decode.

    An image over ``predict_max_pixels`` is a 413 naming it; the request's images together
    over ``predict_max_request_pixels`` a 413 naming that budget. Nothing is decoded; an image
    whose header cannot be read is left to the decoder, which says what is wrong with it.

    Returns:
        The request's pixels, or ``None`` if a header could not be read.
    """
    settings = inference.settings
    per_image, budget = settings.predict_max_pixels, settings.predict_max_request_pixels
    total, unknown = 0, False
    for image in images:
        pixels = image_pixels(image.data)
        if pixels is None:
            unknown = True
            continue
        if pixels > per_image:
            inference.metrics.refused.labels("bad_image").inc()
            reason = f"{too_many_pixels_message(pixels, per_image)} (predict_max_pixels)"
            raise _image_error(
                ImageRejected(
                    status=413, code="image_too_large", field=image.field, label=image.label,
                    reason=reason,
                )
            )  # fmt: skip
        total += pixels
    if total > budget:
        inference.metrics.refused.labels("too_many_pixels").inc()
        message = (
            f"the {len(images)} images hold {total} pixels together; at most {budget} per "
            "request (predict_max_request_pixels): send fewer or smaller images"
        )
        raise ApiError(
            413,
            f"body: {message}",
            code="too_many_pixels",
            details=[ErrorDetail(field="body", message=message, received=total)],
        )
    return None if unknown else total


async def unless_abandoned(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled as soon as the client goes away (then a 499).

    The body has been read by then, so the next ASGI message can only be the disconnect
    (or the end of the response): cancelling ``work`` drops its images not yet decoded.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        gone.cancel()
    if task.cancelled() or not task.done():
        raise ApiError(499, "The client closed the connection before the answer")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def max_images(inference: Inference) -> int:
    """The most images one request may carry."""
    settings = inference.settings
    # A request larger than the queue could never be taken: refuse it as too many images.
    return min(settings.predict_max_images, settings.predict_queue_limit)


async def _model(inference: Inference, ref: ModelRef) -> LoadedModel:
    try:
        return await inference.cache.get(ref)
    except ModelUnavailable as exc:
        raise ApiError(
            503,
            f"The model of run {ref.run_id} could not be loaded: {exc}",
            code="model_unavailable",
        ) from None


def _image_error(exc: ImageRejected) -> ApiError:
    return ApiError(
        exc.status,
        str(exc),
        code=exc.code,
        details=[ErrorDetail(field=exc.field, message=exc.reason, received=exc.label)],
    )
