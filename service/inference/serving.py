"""Running a request's images through a model: load it, decode, batch, wait, within a deadline.

The HTTP side (reading the body, shaping the answer) is in :mod:`service.predict.handlers`;
this is what every predict route shares once it holds the images.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from service.errors import ApiError, ErrorDetail
from service.inference.batcher import BatcherClosed, Overloaded
from service.inference.cache import LoadedModel, ModelRef, ModelUnavailable
from service.inference.images import ImageRejected
from service.inference.payload import EncodedImage
from service.inference.runtime import Inference

RETRY_AFTER_S = 1


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
                        arrays = await inference.decode(images, model.spec)
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
