"""From an :class:`ImageSet` to a batched ``tf.data`` pipeline of float32 pixels in [0, 255].

The TensorFlow backend's implementation of :func:`core.data.pipeline.make_pipeline` (and any
backend's for TFRecord shards).

The pipeline must never be the bottleneck. Images held in memory are shuffled as indices and
gathered a batch at a time; CIFAR's augmentation (pad 4, random crop, flip) is two batched
gathers. Files and TFRecords are decoded in parallel, fitted to the model's size, cached when
small, and augmented per image only for ImageNet's random-resized crop. Randomness is stateless
and seeded: the same seed gives the same epochs, and each epoch differs from the last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from core.data.augment import BatchPolicy
from core.data.augment.tf_batches import POLICY_STREAM, with_policy
from core.data.pipeline import (
    AREA_RANGE,
    CACHE_BUDGET_BYTES,
    CIFAR_PAD,
    CROP_FRACTION,
    RATIO_RANGE,
    Shape,
)
from core.data.types import ImageSet

RECORD_SHUFFLE_BUFFER = 10_000
AUTOTUNE = tf.data.AUTOTUNE


def make_pipeline(
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
) -> tf.data.Dataset:
    """:func:`core.data.pipeline.make_pipeline` with ``tf.data`` (arguments checked there)."""
    aug = augment if training else "none"
    shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    opts = _Opts(
        shape=shape,
        batch_size=batch_size,
        training=training,
        augment=aug,
        seed=seed,
        cache=cache,
        drop_remainder=drop_remainder,
        repeat=repeat,
        epochs=epochs,
        policy=policy if training else None,
    )
    if images.images is not None:
        ds = _from_memory(images, opts)
    elif images.paths is not None:
        ds = _from_files(images, opts)
    else:
        ds = _from_tfrecords(images, opts)
    return ds.prefetch(AUTOTUNE)


# One epoch of training batches from the epoch's two seeds: (order, augmentation).
EpochBatches = Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset]


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

    def batch(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.batch(self.batch_size, drop_remainder=self.drop_remainder)

    def per_epoch(self, epoch_batches: EpochBatches) -> tf.data.Dataset:
        """The training epochs one pass runs through, each built from its own two seeds."""

        def one_epoch(key: tf.Tensor) -> tf.data.Dataset:
            pair = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(key, tf.int64)])
            s_order, s_augment = tf.unstack(tf.random.experimental.stateless_split(pair, 2))
            return epoch_batches(s_order, s_augment)

        return self._epoch_keys().flat_map(one_epoch)

    def _epoch_keys(self) -> tf.data.Dataset:
        if self.epochs is not None:
            return tf.data.Dataset.range(self.epochs.start, self.epochs.stop)
        if self.repeat:
            return tf.data.Dataset.counter()
        # One epoch per pass, a new one each pass: a key drawn from a seeded stream.
        return tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True).take(1)


def _element_seeds(s_augment: tf.Tensor) -> tf.data.Dataset:
    """Seed pairs for the 0th, 1st... element (image or batch) of one epoch."""
    return tf.data.Dataset.counter().map(
        lambda i: tf.random.experimental.stateless_fold_in(s_augment, i)
    )


# The graph-level seed of each epoch's function graph (see _shuffle).
EPOCH_GRAPH_SEED = 87654321


def _shuffle(ds: tf.data.Dataset, buffer: int, s_order: tf.Tensor) -> tf.data.Dataset:
    """``ds.shuffle`` seeded by an epoch's order seed (for what only a buffer shuffles).

    ``Dataset.shuffle`` pairs its seed with the graph-level seed, which a function graph takes
    from ``tf.random.set_seed`` (training sets it to the config's seed). With a global seed of
    0 it compares the tensor seed with 0 in Python and fails ("Using a symbolic tf.Tensor as a
    Python bool"), and with any other it makes the order depend on whatever set it last. So the
    epoch's function graph gets a fixed graph-level seed: the order depends on ``s_order`` alone.
    """
    if not tf.inside_function():  # never change the process's global seed
        raise RuntimeError("_shuffle is for the function that builds one epoch")
    tf.random.set_seed(EPOCH_GRAPH_SEED)  # this function graph's seed only
    return ds.shuffle(buffer, seed=s_order[0])


def _labels(images: ImageSet) -> np.ndarray:
    if images.multi_label:
        return np.asarray(images.labels, dtype=np.float32)
    return np.asarray(images.labels, dtype=np.int64)


def _to_float(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(x, tf.float32), y


# --------------------------------------------------------------------------- in memory


def _from_memory(images: ImageSet, o: _Opts) -> tf.data.Dataset:
    assert images.images is not None
    x = images.images
    if o.augment != "imagenet" and x.shape[1:] != o.shape:
        # Fitting is deterministic: do it once, not every epoch.
        x = (
            np.concatenate(
                [
                    fit_batch(tf.constant(x[i : i + 1024]), o.shape).numpy()
                    for i in range(0, len(x), 1024)
                ]
            )
            if len(x)
            else np.zeros((0, *o.shape), np.uint8)
        )
    pixels, labels = tf.constant(x), tf.constant(_labels(images))
    n = len(x)
    shape = o.shape

    def gather(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(tf.gather(pixels, i), tf.float32), tf.gather(labels, i)

    if not o.training:
        return o.batch(tf.data.Dataset.range(n)).map(gather, num_parallel_calls=AUTOTUNE)

    def epoch_indices(s_order: tf.Tensor, s_augment: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), s_order)
        batches = o.batch(tf.data.Dataset.from_tensor_slices(order))
        return tf.data.Dataset.zip(batches, _element_seeds(s_augment))

    indices = o.per_epoch(epoch_indices)
    if o.augment == "none" and o.policy is None:
        return indices.map(lambda i, s: gather(i), num_parallel_calls=AUTOTUNE)
    bases = {"cifar": cifar_augment_batch, "imagenet": imagenet_augment_batch}

    def step(i: tf.Tensor, s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if o.augment == "none":
            x, y = gather(i)
        else:
            x, y = bases[o.augment](tf.gather(pixels, i), s, shape), tf.gather(labels, i)
        return with_policy(o.policy, x, y, s)

    return indices.map(step, num_parallel_calls=AUTOTUNE)


def fit_batch(x: tf.Tensor, shape: Shape) -> tf.Tensor:
    """uint8 ``(B, h, w, c)`` of one static size to uint8 ``(B, H, W, C)``: resize + centre crop."""
    x = _convert_channels(x, shape[2])
    h0, w0 = int(x.shape[1]), int(x.shape[2])
    h, w = shape[0], shape[1]
    if (h0, w0) == (h, w):
        return x
    nh, nw = _fit_size(h0, w0, h, w)
    y = tf.image.resize(tf.cast(x, tf.float32), (nh, nw), antialias=True)
    top, left = (nh - h) // 2, (nw - w) // 2
    return _to_uint8(y[:, top : top + h, left : left + w, :])


def _fit_size(h0: int, w0: int, h: int, w: int) -> tuple[int, int]:
    # Exactly core.images.resize_for_model(policy="crop"), so evaluation matches inference.
    short = round(min(h, w) / CROP_FRACTION)
    scale = short / min(h0, w0)
    return max(h, round(h0 * scale)), max(w, round(w0 * scale))


def _convert_channels(x: tf.Tensor, channels: int) -> tf.Tensor:
    c = x.shape[-1]
    if c == channels:
        return x
    if channels == 3:
        return tf.repeat(x, 3, axis=-1)
    return _to_uint8(tf.image.rgb_to_grayscale(tf.cast(x, tf.float32)))


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def cifar_augment_batch(x: tf.Tensor, seed: tf.Tensor, shape: Shape) -> tf.Tensor:
    """He et al.'s CIFAR augmentation on a uint8 batch: pad 4 zeros, random crop, random flip.

    Two gathers crop and flip the whole batch at once. Returns float32.
    """
    h, w = shape[0], shape[1]
    b = tf.shape(x)[0]
    s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(x, [[0, 0], [CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD], [0, 0]])
    offsets = tf.random.stateless_uniform([b, 2], s_crop, 0, 2 * CIFAR_PAD + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([b, 1], s_flip, 0, 2, dtype=tf.int32) > 0
    rows = offsets[:, :1] + tf.range(h)[None, :]
    cols = offsets[:, 1:] + tf.where(flip, tf.range(w - 1, -1, -1), tf.range(w))
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    return tf.cast(out, tf.float32)


def imagenet_augment_batch(x: tf.Tensor, seed: tf.Tensor, shape: Shape) -> tf.Tensor:
    """Random-resized crop and flip of an in-memory uint8 batch (one crop_and_resize call)."""
    x = _convert_channels(x, shape[2])
    b = tf.shape(x)[0]
    h0, w0 = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
    s_area, s_ratio, s_y, s_x, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    tries = 10  # as torchvision: the first of 10 draws that fits, else the whole image
    area = tf.random.stateless_uniform([b, tries], s_area, *AREA_RANGE) * h0 * w0
    log_ratio = tf.random.stateless_uniform(
        [b, tries], s_ratio, math.log(RATIO_RANGE[0]), math.log(RATIO_RANGE[1])
    )
    cw = tf.sqrt(area * tf.exp(log_ratio))
    ch = tf.sqrt(area / tf.exp(log_ratio))
    fits = (cw <= w0) & (ch <= h0)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    any_fit = tf.reduce_any(fits, axis=1)
    cw = tf.where(any_fit, tf.gather(cw, first, batch_dims=1), w0)
    ch = tf.where(any_fit, tf.gather(ch, first, batch_dims=1), h0)
    top = tf.random.stateless_uniform([b], s_y) * (h0 - ch)
    left = tf.random.stateless_uniform([b], s_x) * (w0 - cw)
    boxes = tf.stack([top / h0, left / w0, (top + ch) / h0, (left + cw) / w0], axis=1)
    out = tf.image.crop_and_resize(tf.cast(x, tf.float32), boxes, tf.range(b), (shape[0], shape[1]))
    flip = tf.random.stateless_uniform([b, 1, 1, 1], s_flip) < 0.5
    return tf.where(flip, tf.reverse(out, axis=[2]), out)


# --------------------------------------------------------------------------- streamed


def decode(data: tf.Tensor, channels: int) -> tf.Tensor:
    return tf.io.decode_image(data, channels=channels, expand_animations=False)


def fit_image(img: tf.Tensor, shape: Shape) -> tf.Tensor:
    """One uint8 image of any size to ``shape`` (resize shorter side, centre crop)."""
    h, w = shape[0], shape[1]
    h0, w0 = tf.shape(img)[0], tf.shape(img)[1]

    def resize() -> tf.Tensor:
        short = round(min(h, w) / CROP_FRACTION)
        scale = short / tf.cast(tf.minimum(h0, w0), tf.float64)
        nh = tf.maximum(h, tf.cast(tf.round(tf.cast(h0, tf.float64) * scale), tf.int32))
        nw = tf.maximum(w, tf.cast(tf.round(tf.cast(w0, tf.float64) * scale), tf.int32))
        y = tf.image.resize(tf.cast(img, tf.float32), tf.stack([nh, nw]), antialias=True)
        return _to_uint8(tf.image.crop_to_bounding_box(y, (nh - h) // 2, (nw - w) // 2, h, w))

    out = tf.cond((h0 == h) & (w0 == w), lambda: img, resize)
    return tf.ensure_shape(out, shape)


def random_resized_crop(data: tf.Tensor, seed: tf.Tensor, shape: Shape) -> tf.Tensor:
    """ImageNet training crop of one encoded image; JPEGs decode only the crop window."""
    s_box, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    def window(size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            size,
            whole,
            seed=s_box,
            min_object_covered=0.0,
            aspect_ratio_range=RATIO_RANGE,
            area_range=AREA_RANGE,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return begin, extent

    def jpeg() -> tf.Tensor:
        begin, extent = window(tf.io.extract_jpeg_shape(data))
        crop = tf.stack([begin[0], begin[1], extent[0], extent[1]])
        return tf.io.decode_and_crop_jpeg(data, crop, channels=shape[2])

    def other() -> tf.Tensor:
        img = decode(data, shape[2])
        begin, extent = window(tf.shape(img))
        return tf.slice(img, begin, extent)

    img = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    out = tf.image.resize(tf.cast(img, tf.float32), (shape[0], shape[1]), antialias=True)
    out = tf.image.stateless_random_flip_left_right(out, s_flip)
    return tf.ensure_shape(out, shape)


# Encoded ``(bytes, label)`` elements: in order (``None``) or in an epoch's order.


Reader = Callable[[tf.Tensor | None], tf.data.Dataset]


def _stream(
    reader: Reader, n: int, o: _Opts, *, reader_shuffles: bool, buffer: int
) -> tf.data.Dataset:
    """Encoded elements to batches. ``reader_shuffles``: the reader's order is a full shuffle
    (names are cheap to shuffle); otherwise a buffer of ``buffer`` elements shuffles them."""
    shape = o.shape
    cacheable = o.cache and n * math.prod(shape) <= CACHE_BUDGET_BYTES

    def decoded(encoded: tf.data.Dataset) -> tf.data.Dataset:
        return encoded.map(
            lambda data, y: (fit_image(decode(data, shape[2]), shape), y),
            num_parallel_calls=AUTOTUNE,
        ).ignore_errors(log_warning=True)

    def in_epoch_order(s_order: tf.Tensor) -> tf.data.Dataset:
        encoded = reader(s_order)
        if reader_shuffles:
            return encoded
        return _shuffle(encoded, buffer, s_order)

    if not o.training:
        ds = decoded(reader(None))
        return o.batch(ds.cache() if cacheable else ds).map(_to_float, num_parallel_calls=AUTOTUNE)
    if o.augment == "imagenet":  # crops per image, from the encoded bytes

        def cropped(s_order: tf.Tensor, s_augment: tf.Tensor) -> tf.data.Dataset:
            ds = tf.data.Dataset.zip(in_epoch_order(s_order), _element_seeds(s_augment)).map(
                lambda e, s: (random_resized_crop(e[0], s, shape), e[1]),
                num_parallel_calls=AUTOTUNE,
            )
            batched = o.batch(ds.ignore_errors(log_warning=True))
            if o.policy is None:
                return batched
            # Batch seeds of their own: the per-image ones above number the images.
            seeds = _element_seeds(
                tf.random.experimental.stateless_fold_in(s_augment, POLICY_STREAM)
            )
            return tf.data.Dataset.zip(batched, seeds).map(
                lambda b, s: with_policy(o.policy, b[0], b[1], s), num_parallel_calls=AUTOTUNE
            )

        return o.per_epoch(cropped)
    cached = decoded(reader(None)).cache() if cacheable else None

    def batches(s_order: tf.Tensor, s_augment: tf.Tensor) -> tf.data.Dataset:
        if cached is not None:
            ds = _shuffle(cached, max(1, n), s_order)
        else:
            ds = decoded(in_epoch_order(s_order))
        ds = o.batch(ds)
        if o.augment != "cifar" and o.policy is None:
            return ds.map(_to_float, num_parallel_calls=AUTOTUNE)

        def step(b: tuple[tf.Tensor, tf.Tensor], s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            if o.augment == "cifar":
                x = cifar_augment_batch(b[0], s, shape)
            else:
                x = tf.cast(b[0], tf.float32)
            return with_policy(o.policy, x, b[1], s)

        return tf.data.Dataset.zip(ds, _element_seeds(s_augment)).map(
            step, num_parallel_calls=AUTOTUNE
        )

    return o.per_epoch(batches)


def _permutation(n: int, s_order: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), s_order)


def _from_files(images: ImageSet, o: _Opts) -> tf.data.Dataset:
    assert images.paths is not None
    n = len(images.paths)
    paths, labels = tf.constant(images.paths, tf.string), tf.constant(_labels(images))

    def reader(s_order: tf.Tensor | None) -> tf.data.Dataset:
        if s_order is None:
            ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        else:  # shuffling names is cheap: do it before reading
            order = _permutation(n, s_order)
            ds = tf.data.Dataset.from_tensor_slices(
                (tf.gather(paths, order), tf.gather(labels, order))
            )
        return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=AUTOTUNE)

    return _stream(reader, n, o, reader_shuffles=True, buffer=max(1, n))


def _from_tfrecords(images: ImageSet, o: _Opts) -> tf.data.Dataset:
    assert images.tfrecords is not None
    files = tf.constant(images.tfrecords, tf.string)
    n_files = len(images.tfrecords)
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    }
    offset = tf.constant(images.label_offset, tf.int64)

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ex: Any = tf.io.parse_single_example(record, spec)
        return ex["image/encoded"], ex["image/class/label"] - offset

    def reader(s_order: tf.Tensor | None) -> tf.data.Dataset:
        names = files if s_order is None else tf.gather(files, _permutation(n_files, s_order))
        records = tf.data.Dataset.from_tensor_slices(names).interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
            cycle_length=min(16, n_files),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return records.map(parse, num_parallel_calls=AUTOTUNE)

    n = len(images)
    return _stream(
        reader, n, o, reader_shuffles=False, buffer=max(1, min(n, RECORD_SHUFFLE_BUFFER))
    )


def ten_crop(batch_images: Any, size: int | tuple[int, int]) -> tf.Tensor:
    """The four corner crops, the centre crop and their mirror images (10-crop evaluation).

    Args:
        batch_images: ``(B, H, W, C)`` images, already resized (e.g. shorter side 256).
        size: the crop's side, or (height, width).

    Returns:
        ``(B, 10, h, w, C)``: average the model's outputs over axis 1.
    """
    x = tf.convert_to_tensor(batch_images)
    h, w = (size, size) if isinstance(size, int) else size
    big_h, big_w = tf.shape(x)[1], tf.shape(x)[2]
    corners = [
        (0, 0),
        (0, big_w - w),
        (big_h - h, 0),
        (big_h - h, big_w - w),
        ((big_h - h) // 2, (big_w - w) // 2),
    ]
    crops = [x[:, top : top + h, left : left + w, :] for top, left in corners]
    crops += [tf.reverse(c, axis=[2]) for c in crops]
    return tf.stack(crops, axis=1)
