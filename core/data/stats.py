"""Pixel statistics for input normalisation (the paper subtracts CIFAR's per-pixel mean)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from core.data.types import ImageSet

MODES = ("per_pixel_mean", "per_channel")
_CHUNK = 1024


def pixel_statistics(
    images: ImageSet,
    *,
    mode: str,
    image_shape: tuple[int, int, int],
    max_images: int = 50_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of pixels in [0, 255], as the model will see them.

    Images are fitted to ``image_shape`` as for evaluation. At most ``max_images`` are used:
    a seeded random sample, or the first ones of a TFRecord split.

    Args:
        images: the (training) split.
        mode: ``per_pixel_mean`` gives the mean image ``(H, W, C)`` and the per-channel std
            ``(C,)``; ``per_channel`` gives ``(C,)`` mean and std.
        image_shape: the model's input (H, W, C).
        max_images: sample size.
        seed: picks the sample.

    Returns:
        float32 ``(mean, std)``.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown statistics mode: {mode!r}. Expected one of {', '.join(MODES)}")
    shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    n = len(images)
    if n == 0:
        raise ValueError("cannot compute pixel statistics of an empty split")
    sample = images
    if images.tfrecords is None and n > max_images:
        pick = np.sort(np.random.default_rng(seed).choice(n, size=max_images, replace=False))
        sample = images.subset(pick)
    total = np.zeros(shape, np.float64)
    squares = np.zeros(shape[2], np.float64)
    count = 0
    for batch in _batches(sample, shape, max_images):
        x = batch.astype(np.float32)
        total += x.sum(axis=0, dtype=np.float64)
        squares += np.square(x).sum(axis=(0, 1, 2), dtype=np.float64)
        count += len(x)
    if count == 0:
        raise ValueError("no readable images to compute pixel statistics from")
    mean_image = total / count
    channel_mean = mean_image.mean(axis=(0, 1))
    variance = squares / (count * shape[0] * shape[1]) - channel_mean**2
    std = np.sqrt(np.maximum(variance, 0.0))
    mean = mean_image if mode == "per_pixel_mean" else channel_mean
    return mean.astype(np.float32), std.astype(np.float32)


def _batches(images: ImageSet, shape: tuple[int, int, int], limit: int) -> Iterator[np.ndarray]:
    if images.images is not None and images.images.shape[1:] == shape:
        for i in range(0, min(len(images.images), limit), _CHUNK):
            yield images.images[i : min(i + _CHUNK, limit)]
        return
    from core.data.pipeline import make_pipeline  # TensorFlow only when it is needed

    ds = make_pipeline(images, batch_size=256, training=False, image_shape=shape, cache=False)
    seen = 0
    for x, _ in ds.as_numpy_iterator():
        yield x[: limit - seen]
        seen += len(x)
        if seen >= limit:
            return
