"""Batches from NumPy and Pillow, for Keras backends other than TensorFlow (JAX, PyTorch).

The contract of :func:`core.data.pipeline.make_pipeline`, without TensorFlow. Batch ``j`` of
epoch ``e`` is a pure function of ``(seed, e, j)``: the epoch's order is a permutation drawn
from ``(seed, e)`` and each batch's augmentation from ``(seed, e, j)``. That makes the batches
randomly accessible, which is what Keras' ``PyDataset`` asks for, and a resumed run sees exactly
the batches the uninterrupted one saw, whatever was read before.

Images in memory are gathered a batch at a time and CIFAR's augmentation (pad 4, random crop,
flip) is one fancy-indexing gather. Files are decoded with Pillow on a small thread pool (its
decoders release the GIL), fitted to the model's size and cached while they fit the budget; the
next batches are built in the background while the model runs on the current one.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from PIL import Image

from core.data.augment import BatchPolicy
from core.data.pipeline import (
    AREA_RANGE,
    CACHE_BUDGET_BYTES,
    CIFAR_PAD,
    RATIO_RANGE,
    Shape,
)
from core.data.types import ImageSet
from core.images import ImageDecodeError, decode_image, resize_for_model

log = logging.getLogger(__name__)

# Pillow decodes outside the GIL; more threads than cores only add contention.
DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))
# Batches built ahead of the one the model asks for.
PREFETCH_BATCHES = 2
# Separate streams of one epoch's randomness: order, the base transform, the policies.
_ORDER, _AUGMENT, _POLICY = 0, 1, 2

Batch = tuple[np.ndarray, np.ndarray]
Transform = Callable[[np.ndarray, np.ndarray], Batch]

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(name: str, workers: int) -> ThreadPoolExecutor:
    """One process-wide pool per purpose: pipelines are many, threads should not be."""
    with _pools_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(workers, thread_name_prefix=f"pipeline-{name}")
        return _pools[name]


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator drawn from ``(seed, *keys)`` alone (SeedSequence hashes the whole tuple)."""
    return np.random.default_rng([seed % 2**63, *keys])


@dataclass(frozen=True)
class _Opts:
    shape: Shape
    batch_size: int
    training: bool
    augment: str
    seed: int
    cache: bool
    drop_remainder: bool
    repeat: bool
    epochs: range | None
    policy: BatchPolicy | None = None


def make_numpy_pipeline(
    images: ImageSet,
    *,
    batch_size: int,
    training: bool,
    image_shape: Shape,
    augment: str = "none",
    policy: BatchPolicy | None = None,
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool = False,
    repeat: bool = False,
    epochs: range | None = None,
) -> NumpyBatches:
    """:func:`core.data.pipeline.make_pipeline` in NumPy (arguments checked there)."""
    if images.images is None and images.paths is None:
        raise ValueError("the NumPy pipeline reads images in memory or files, not TFRecords")
    shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    opts = _Opts(
        shape=shape,
        batch_size=batch_size,
        training=training,
        augment=augment if training else "none",
        seed=seed,
        cache=cache,
        drop_remainder=drop_remainder,
        repeat=repeat,
        epochs=epochs,
        policy=policy if training else None,
    )
    return NumpyBatches(_Source(images, opts), opts)


class NumpyBatches(keras.utils.PyDataset):
    """Batches of ``(float32 images, labels)``: a Keras ``PyDataset`` and a Python iterable.

    Training with ``epochs`` gives ``len(epochs) * batches_per_epoch`` batches, epoch after
    epoch; with ``repeat``, batches forever; otherwise one epoch per pass (the pass counter
    advances at each epoch's end). Evaluation gives the images once, in order.
    """

    def __init__(
        self, source: _Source, opts: _Opts, transforms: tuple[Transform, ...] = ()
    ) -> None:
        # workers=1: Keras reads batches in order; the prefetch here overlaps them with steps.
        super().__init__(workers=1, use_multiprocessing=False)
        self._source = source
        self._opts = opts
        self._transforms = transforms
        n = len(source)
        b = opts.batch_size
        self.batches_per_epoch = n // b if opts.drop_remainder else math.ceil(n / b)
        self._pass = 0
        self._ahead: dict[int, Future[Batch]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the tf.data-like API

    def map(self, fn: Transform) -> NumpyBatches:
        """The same batches with ``fn(images, labels) -> (images, labels)`` applied to each."""
        return NumpyBatches(self._source, self._opts, (*self._transforms, fn))

    def as_numpy_iterator(self) -> Iterator[Batch]:
        return iter(self)

    # ------------------------------------------------------------------ PyDataset

    @property
    def num_batches(self) -> int | None:
        if self._opts.training and self._opts.repeat:
            return None
        if self._opts.training and self._opts.epochs is not None:
            return len(self._opts.epochs) * self.batches_per_epoch
        return self.batches_per_epoch

    def __len__(self) -> int:
        n = self.num_batches
        if n is None:
            raise TypeError("a repeating pipeline has no length")
        return n

    def __getitem__(self, index: int) -> Batch:
        total = self.num_batches
        if index < 0 or (total is not None and index >= total):
            raise IndexError(f"batch {index} of {total}")
        with self._lock:
            future = self._ahead.pop(index, None) or self._submit(index)
            for stale in [i for i in self._ahead if i < index]:
                self._ahead.pop(stale).cancel()
            for k in range(index + 1, index + 1 + PREFETCH_BATCHES):
                if (total is None or k < total) and k not in self._ahead:
                    self._ahead[k] = self._submit(k)
        return future.result()

    def __iter__(self) -> Iterator[Batch]:
        indices = itertools.count() if self.num_batches is None else range(len(self))
        for index in indices:
            yield self[index]
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        if self._opts.training and self._opts.epochs is None and not self._opts.repeat:
            with self._lock:
                self._pass += 1
                for future in self._ahead.values():
                    future.cancel()
                self._ahead.clear()

    # ------------------------------------------------------------------ building batches

    def _submit(self, index: int) -> Future[Batch]:
        return _pool("batches", PREFETCH_BATCHES).submit(self._build, index, self._pass)

    def _build(self, index: int, pass_number: int) -> Batch:
        o = self._opts
        if not o.training:
            start = index * o.batch_size
            x, y = self._source.read(np.arange(start, min(start + o.batch_size, len(self._source))))
        else:
            epoch, j = divmod(index, self.batches_per_epoch)
            if o.epochs is not None:
                epoch += o.epochs.start
            elif not o.repeat:
                epoch = pass_number
            order = self._source.order(o.seed, epoch)
            rng = _rng(o.seed, epoch, _AUGMENT, j)
            x, y = self._source.read(order[j * o.batch_size : (j + 1) * o.batch_size], rng=rng)
            if o.policy is not None:
                x, y = o.policy(x, y, (o.seed % 2**63, epoch, _POLICY, j))
        for fn in self._transforms:
            x, y = fn(x, y)
        return x, y


class _Source:
    """An ImageSet's pixels fitted to the model, read by index, with augmentation."""

    def __init__(self, images: ImageSet, opts: _Opts) -> None:
        self.opts = opts
        self.labels = (
            np.asarray(images.labels, np.float32)
            if images.multi_label
            else np.asarray(images.labels, np.int64)
        )
        self.paths = images.paths
        self.pixels = images.images
        if self.pixels is not None and opts.augment != "imagenet":
            # Fitting is deterministic: do it once, not every epoch.
            self.pixels = _fit_all(self.pixels, opts.shape)
        n = len(images)
        cacheable = self.paths is not None and opts.cache and opts.augment != "imagenet"
        self._cache: dict[int, np.ndarray | None] | None = (
            {} if cacheable and n * math.prod(opts.shape) <= CACHE_BUDGET_BYTES else None
        )
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self._orders_lock = threading.Lock()
        self._n = n

    def __len__(self) -> int:
        return self._n

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The epoch's permutation of the images (the last two epochs' kept)."""
        key = (seed, epoch)
        with self._orders_lock:
            if key not in self._orders:
                if len(self._orders) >= 2:
                    self._orders.pop(next(iter(self._orders)))
                self._orders[key] = _rng(seed, epoch, _ORDER).permutation(self._n)
            return self._orders[key]

    def read(self, idx: np.ndarray, *, rng: np.random.Generator | None = None) -> Batch:
        """float32 images and labels at ``idx``; augmented when ``rng`` is given.

        Files that fail to decode are left out of the batch (and logged once), as the tf.data
        pipeline's ``ignore_errors`` does.
        """
        o = self.opts
        augment = o.augment if rng is not None else "none"
        if augment == "imagenet":
            assert rng is not None
            boxes = _crop_boxes(rng, len(idx))
            flips = rng.random(len(idx)) < 0.5
            crops = _map(
                lambda k: self._crop(int(idx[k]), boxes[k], bool(flips[k])), range(len(idx))
            )
            kept = [k for k, c in enumerate(crops) if c is not None]
            x = _stack([crops[k] for k in kept], o.shape)
            return x.astype(np.float32), self.labels[idx[kept]]
        if self.pixels is not None:
            x, y = self.pixels[idx], self.labels[idx]
        else:
            fitted = _map(lambda i: self._fitted(int(i)), idx)
            kept = [k for k, f in enumerate(fitted) if f is not None]
            x, y = _stack([fitted[k] for k in kept], o.shape), self.labels[idx[kept]]
        if augment == "cifar":
            assert rng is not None
            return cifar_augment(x, rng, o.shape), y
        return x.astype(np.float32), y

    def _fitted(self, i: int) -> np.ndarray | None:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        arr = self._decode(i)
        fitted = None if arr is None else resize_for_model(arr, self.opts.shape, "crop")
        if self._cache is not None:
            self._cache[i] = fitted
        return fitted

    def _decode(self, i: int) -> np.ndarray | None:
        assert self.paths is not None
        try:
            data = Path(self.paths[i]).read_bytes()
            return decode_image(data, channels=self.opts.shape[2])
        except (ImageDecodeError, OSError) as exc:
            log.warning("skipping %s: %s", self.paths[i], exc)
            return None

    def _crop(self, i: int, box: np.ndarray, flip: bool) -> np.ndarray | None:
        if self.pixels is not None:
            arr: np.ndarray | None = _convert_channels(self.pixels[i], self.opts.shape[2])
        else:
            arr = self._decode(i)
        if arr is None:
            return None
        return random_resized_crop(arr, box, flip, self.opts.shape)


def _map(fn: Callable[[Any], Any], items: Any) -> list[Any]:
    items = list(items)
    if len(items) < 2:
        return [fn(item) for item in items]
    return list(_pool("decode", DECODE_THREADS).map(fn, items))


def _stack(arrays: list[np.ndarray], shape: Shape) -> np.ndarray:
    return np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8)


def _convert_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (..., H, W, c) to ``channels`` channels: gray repeated, or RGB's luma (BT.601)."""
    c = arr.shape[-1]
    if c == channels:
        return arr
    if channels == 3:
        return np.repeat(arr, 3, axis=-1)
    luma = arr.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32)
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def _fit_all(pixels: np.ndarray, shape: Shape) -> np.ndarray:
    pixels = _convert_channels(pixels, shape[2])
    if pixels.shape[1:] == shape:
        return pixels
    return _stack([resize_for_model(p, shape, "crop") for p in pixels], shape)


def cifar_augment(x: np.ndarray, rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """He et al.'s CIFAR augmentation on a uint8 batch: pad 4 zeros, random crop, random flip.

    One gather crops and flips the whole batch. Returns float32.
    """
    b, (h, w) = len(x), shape[:2]
    padded = np.pad(x, ((0, 0), (CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD), (0, 0)))
    offsets = rng.integers(0, 2 * CIFAR_PAD + 1, size=(b, 2))
    flip = rng.integers(0, 2, size=(b, 1)) > 0
    rows = offsets[:, :1] + np.arange(h)[None, :]
    cols = offsets[:, 1:] + np.where(flip, np.arange(w - 1, -1, -1), np.arange(w))
    out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.astype(np.float32)


def _crop_boxes(rng: np.random.Generator, b: int, tries: int = 10) -> np.ndarray:
    """Per image: (area fraction, log aspect ratio) for ``tries`` draws, and two offsets.

    Drawn for the whole batch at once, a fixed number per image, so that each image's crop
    does not depend on how many draws the others needed.
    """
    area = rng.uniform(*AREA_RANGE, size=(b, tries))
    log_ratio = rng.uniform(math.log(RATIO_RANGE[0]), math.log(RATIO_RANGE[1]), size=(b, tries))
    offsets = rng.random((b, 2))
    return np.concatenate([area, log_ratio, offsets], axis=1)


def random_resized_crop(arr: np.ndarray, box: np.ndarray, flip: bool, shape: Shape) -> np.ndarray:
    """ImageNet's training crop of one uint8 image: as torchvision, the first of the draws in
    ``box`` (from :func:`_crop_boxes`) that fits, else the whole image; resized, maybe flipped."""
    h0, w0 = arr.shape[:2]
    tries = (len(box) - 2) // 2
    ch, cw = float(h0), float(w0)
    for area, log_ratio in zip(box[:tries], box[tries : 2 * tries], strict=True):
        w = math.sqrt(area * h0 * w0 * math.exp(log_ratio))
        h = math.sqrt(area * h0 * w0 / math.exp(log_ratio))
        if w <= w0 and h <= h0:
            ch, cw = h, w
            break
    top, left = box[-2] * (h0 - ch), box[-1] * (w0 - cw)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    # Pillow's bilinear filter widens with the scale factor: antialiased when shrinking.
    out = img.resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch)
    )
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(out, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def ten_crop_numpy(batch_images: Any, size: int | tuple[int, int]) -> np.ndarray:
    """:func:`core.data.pipeline.ten_crop` in NumPy: ``(B, 10, h, w, C)``."""
    x = np.asarray(batch_images)
    h, w = (size, size) if isinstance(size, int) else size
    big_h, big_w = x.shape[1], x.shape[2]
    corners = [
        (0, 0),
        (0, big_w - w),
        (big_h - h, 0),
        (big_h - h, big_w - w),
        ((big_h - h) // 2, (big_w - w) // 2),
    ]
    crops = [x[:, top : top + h, left : left + w, :] for top, left in corners]
    crops += [c[:, :, ::-1, :] for c in crops]
    return np.stack(crops, axis=1)
