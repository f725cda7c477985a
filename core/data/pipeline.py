"""From an :class:`ImageSet` to a batched ``tf.data`` pipeline of float32 pixels in [0, 255].

The pipeline must never be the bottleneck. Images held in memory are shuffled as indices and
gathered a batch at a time; CIFAR's augmentation (pad 4, random crop, flip) is two batched
gathers. Files and TFRecords are decoded in parallel, fitted to the model's size, cached when
small, and augmented per image only for ImageNet's random-resized crop. Randomness is stateless
and seeded: the same seed gives the same epochs, and each epoch differs from the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from core.data.types import ImageSet

AUGMENTS = ("none", "cifar", "imagenet")
CROP_FRACTION = 0.875  # evaluation: shorter side to size/0.875 (256 for 224), centre crop
CIFAR_PAD = 4
AREA_RANGE = (0.08, 1.0)
RATIO_RANGE = (3 / 4, 4 / 3)
# Fitted uint8 images of a streamed source are cached in memory up to this size.
CACHE_BUDGET_BYTES = 2 << 30
RECORD_SHUFFLE_BUFFER = 10_000
AUTOTUNE = tf.data.AUTOTUNE
Shape = tuple[int, int, int]


def make_pipeline(
    images: ImageSet,
    *,
    batch_size: int,
    training: bool,
    image_shape: Shape,
    augment: str = "none",
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` for training or evaluation.

    Args:
        images: the split to read.
        batch_size: images per batch.
        training: shuffle (reshuffled every epoch, seeded) and augment.
        image_shape: the model's (H, W, C); other sizes are fitted (shorter side to
            H/0.875, centre crop) and channels converted (gray <-> RGB).
        augment: ``none``; ``cifar`` (pad 4 zero pixels, random HxW crop, random horizontal
            flip); ``imagenet`` (random-resized crop, scale 0.08-1, ratio 3/4-4/3, and flip).
            Ignored unless ``training``.
        seed: seeds shuffling and augmentation.
        cache: keep decoded, fitted images in memory (streamed sources, when they fit).
        drop_remainder: drop the last, smaller batch.
        repeat: repeat forever (batches then run across epoch boundaries).

    Returns:
        A dataset of float32 ``(B, H, W, C)`` images in [0, 255] and int64 ``(B,)`` labels,
        or float32 ``(B, K)`` multi-hot labels for multi-label sets.
    """
    if augment not in AUGMENTS:
        raise ValueError(
            f"Unknown augmentation: {augment!r}. Expected one of {', '.join(AUGMENTS)}"
        )
    if len(image_shape) != 3 or image_shape[2] not in (1, 3):
        raise ValueError(f"image_shape must be (H, W, 1|3); got {image_shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    aug = augment if training else "none"
    shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    opts = _Opts(shape, batch_size, training, aug, seed, cache, drop_remainder, repeat)
    if images.images is not None:
        ds = _from_memory(images, opts)
    elif images.paths is not None:
        ds = _from_files(images, opts)
    else:
        ds = _from_tfrecords(images, opts)
    return ds.prefetch(AUTOTUNE)


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

    def seeds(self) -> tf.data.Dataset:
        """One int64 per element, different every epoch, deterministic from the seed."""
        return tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)


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
    idx = tf.data.Dataset.range(len(x))
    if o.training:
        idx = idx.shuffle(max(1, len(x)), seed=o.seed, reshuffle_each_iteration=True)
    if o.repeat:
        idx = idx.repeat()
    idx = idx.batch(o.batch_size, drop_remainder=o.drop_remainder)
    shape = o.shape
    if o.augment == "none":
        return idx.map(
            lambda i: (tf.cast(tf.gather(pixels, i), tf.float32), tf.gather(labels, i)),
            num_parallel_calls=AUTOTUNE,
        )
    augment = cifar_augment_batch if o.augment == "cifar" else imagenet_augment_batch

    def step(i: tf.Tensor, s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return augment(tf.gather(pixels, i), _seed_pair(s), shape), tf.gather(labels, i)

    return tf.data.Dataset.zip(idx, o.seeds()).map(step, num_parallel_calls=AUTOTUNE)


def _seed_pair(s: tf.Tensor) -> tf.Tensor:
    return tf.stack([s, tf.constant(0, tf.int64)])


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


def _stream(
    encoded: tf.data.Dataset, n: int, o: _Opts, *, shuffled: bool, buffer: int
) -> tf.data.Dataset:
    """``(bytes, label)`` elements to batches. ``shuffled``: the caller already shuffled."""
    shape = o.shape
    if o.augment == "imagenet":
        if o.training and not shuffled:
            encoded = encoded.shuffle(buffer, seed=o.seed, reshuffle_each_iteration=True)
        if o.repeat:
            encoded = encoded.repeat()
        ds = (
            tf.data.Dataset.zip(encoded, o.seeds())
            .map(
                lambda e, s: (random_resized_crop(e[0], _seed_pair(s), shape), e[1]),
                num_parallel_calls=AUTOTUNE,
            )
            .ignore_errors(log_warning=True)
        )
        return ds.batch(o.batch_size, drop_remainder=o.drop_remainder)
    cacheable = o.cache and n * math.prod(shape) <= CACHE_BUDGET_BYTES
    if o.training and not shuffled and not cacheable:
        encoded = encoded.shuffle(buffer, seed=o.seed, reshuffle_each_iteration=True)
    ds = encoded.map(
        lambda data, y: (fit_image(decode(data, shape[2]), shape), y), num_parallel_calls=AUTOTUNE
    ).ignore_errors(log_warning=True)
    if cacheable:
        ds = ds.cache()
        if o.training:
            ds = ds.shuffle(max(1, n), seed=o.seed, reshuffle_each_iteration=True)
    if o.repeat:
        ds = ds.repeat()
    ds = ds.batch(o.batch_size, drop_remainder=o.drop_remainder)
    if o.augment == "cifar":
        return tf.data.Dataset.zip(ds, o.seeds()).map(
            lambda b, s: (cifar_augment_batch(b[0], _seed_pair(s), shape), b[1]),
            num_parallel_calls=AUTOTUNE,
        )
    return ds.map(_to_float, num_parallel_calls=AUTOTUNE)


def _from_files(images: ImageSet, o: _Opts) -> tf.data.Dataset:
    assert images.paths is not None
    n = len(images.paths)
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(images.paths, tf.string), _labels(images)))
    cacheable = o.cache and o.augment != "imagenet" and n * math.prod(o.shape) <= CACHE_BUDGET_BYTES
    shuffled = o.training and not cacheable
    if shuffled:  # shuffling names is cheap: do it before reading
        ds = ds.shuffle(max(1, n), seed=o.seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=AUTOTUNE)
    return _stream(ds, n, o, shuffled=shuffled, buffer=max(1, n))


def _from_tfrecords(images: ImageSet, o: _Opts) -> tf.data.Dataset:
    assert images.tfrecords is not None
    files = tf.data.Dataset.from_tensor_slices(images.tfrecords)
    if o.training:
        files = files.shuffle(len(images.tfrecords), seed=o.seed, reshuffle_each_iteration=True)
    records = files.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
        cycle_length=min(16, len(images.tfrecords)),
        num_parallel_calls=AUTOTUNE,
    )
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    }
    offset = tf.constant(images.label_offset, tf.int64)

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ex: Any = tf.io.parse_single_example(record, spec)
        return ex["image/encoded"], ex["image/class/label"] - offset

    ds = records.map(parse, num_parallel_calls=AUTOTUNE)
    n = len(images)
    return _stream(ds, n, o, shuffled=False, buffer=max(1, min(n, RECORD_SHUFFLE_BUFFER)))


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
