"""From an :class:`ImageSet` to batches of float32 pixels in [0, 255], on any Keras backend.

Two implementations keep one contract. Under TensorFlow (the default backend) batches come from
a ``tf.data`` pipeline (:mod:`core.data.pipeline_tf`); under the other backends (JAX, PyTorch)
from NumPy and Pillow (:mod:`core.data.pipeline_numpy`), so that training needs no TensorFlow
there. Both shuffle and augment as a function of ``(seed, epoch)`` alone, so a run resumed at
epoch k sees exactly the batches the uninterrupted run saw; their random draws differ (each
uses its own generator), so a run repeats bit for bit on the same backend, not across backends.

This module imports neither TensorFlow nor Keras until a pipeline is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from core.data.augment import AugmentParams, batch_policy, parse_augment
from core.data.types import ImageSet
from core.environment import keras_backend, require_tensorflow

CROP_FRACTION = 0.875  # evaluation: shorter side to size/0.875 (256 for 224), centre crop
CIFAR_PAD = 4
AREA_RANGE = (0.08, 1.0)
RATIO_RANGE = (3 / 4, 4 / 3)
# Fitted uint8 images of a streamed source are cached in memory up to this size.
CACHE_BUDGET_BYTES = 2 << 30
Shape = tuple[int, int, int]

# The tf.data pipeline's building blocks, importable from here as before the split.
_TF_NAMES = (
    "cifar_augment_batch",
    "decode",
    "fit_batch",
    "fit_image",
    "imagenet_augment_batch",
    "random_resized_crop",
    "AUTOTUNE",
    "RECORD_SHUFFLE_BUFFER",
)


def make_pipeline(
    images: ImageSet,
    *,
    batch_size: int,
    training: bool,
    image_shape: Shape,
    augment: str = "none",
    augment_params: AugmentParams | None = None,
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool = False,
    repeat: bool = False,
    epochs: range | None = None,
) -> Any:
    """Batches of ``(images, labels)`` for training or evaluation.

    Args:
        images: the split to read.
        batch_size: images per batch.
        training: shuffle (reshuffled every epoch, seeded) and augment.
        image_shape: the model's (H, W, C); other sizes are fitted (shorter side to
            H/0.875, centre crop) and channels converted (gray <-> RGB).
        augment: the base, ``none``; ``cifar`` (pad 4 zero pixels, random HxW crop, random
            horizontal flip); ``imagenet`` (random-resized crop, scale 0.08-1, ratio 3/4-4/3,
            and flip); then any policies joined with ``+`` (``cifar+randaugment+cutmix``, see
            :mod:`core.data.augment`), applied to each batch after the base. Ignored unless
            ``training``.
        augment_params: the policies' parameters (defaults: the papers' CIFAR settings).
        seed: seeds shuffling and augmentation.
        cache: keep decoded, fitted images in memory (streamed sources, when they fit).
        drop_remainder: drop the last, smaller batch of each epoch.
        repeat: repeat forever, epoch 0, 1, 2... after one another.
        epochs: with ``training``, the (0-based) epochs one pass of the dataset runs through,
            one after the other: ``range(3, 10)`` gives the batches of epochs 3 to 9 of the run,
            so a run resumed at epoch 3 sees exactly what the uninterrupted run saw.

    Each training epoch's order and augmentation are a function of ``seed`` and the epoch's
    number alone, never of a random stream consumed since the start. Without ``epochs`` or
    ``repeat``, every pass is one epoch, a different one each time (the same sequence for
    the same seed).

    Returns:
        Under TensorFlow a ``tf.data.Dataset``, under other backends a
        :class:`core.data.pipeline_numpy.NumpyBatches` (a Keras ``PyDataset``); either yields
        float32 ``(B, H, W, C)`` images in [0, 255] and int64 ``(B,)`` labels, or float32
        ``(B, K)`` multi-hot labels for multi-label sets, or float32 ``(B, K)`` soft labels
        (rows summing to 1) when training with mixup or CutMix; both have ``map`` and
        ``as_numpy_iterator``.

    Raises:
        ValueError: an unknown or contradictory ``augment`` (see
            :func:`core.data.augment.parse_augment`), label mixing on multi-label data, a
            Cutout larger than the image.
        BackendError: TFRecord data on a backend other than TensorFlow, without TensorFlow.
    """
    spec = parse_augment(augment)
    if len(image_shape) != 3 or image_shape[2] not in (1, 3):
        raise ValueError(f"image_shape must be (H, W, 1|3); got {image_shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    if repeat and epochs is not None:
        raise ValueError("repeat and epochs exclude each other")
    policy = (
        batch_policy(
            spec,
            augment_params,
            num_classes=len(images.class_names),
            multi_label=images.multi_label,
            image_shape=image_shape,
        )
        if training
        else None
    )
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "training": training,
        "image_shape": image_shape,
        "augment": spec.base,
        "policy": policy,
        "seed": seed,
        "cache": cache,
        "drop_remainder": drop_remainder,
        "repeat": repeat,
        "epochs": epochs,
    }
    if uses_tf_data(images):
        if images.tfrecords is not None:
            require_tensorflow("TFRecord data")
        from core.data import pipeline_tf

        return pipeline_tf.make_pipeline(images, **options)
    from core.data.pipeline_numpy import make_numpy_pipeline

    return make_numpy_pipeline(images, **options)


def uses_tf_data(images: ImageSet | None = None) -> bool:
    """Whether pipelines (of ``images``) are ``tf.data``: on TensorFlow, and for TFRecords."""
    return keras_backend() == "tensorflow" or (images is not None and images.tfrecords is not None)


def ten_crop(batch_images: Any, size: int | tuple[int, int]) -> Any:
    """The four corner crops, the centre crop and their mirror images (10-crop evaluation).

    Args:
        batch_images: ``(B, H, W, C)`` images, already resized (e.g. shorter side 256).
        size: the crop's side, or (height, width).

    Returns:
        ``(B, 10, h, w, C)``: average the model's outputs over axis 1. A ``tf.Tensor`` under
        TensorFlow, a NumPy array under other backends.
    """
    if uses_tf_data():
        from core.data import pipeline_tf

        return pipeline_tf.ten_crop(batch_images, size)
    from core.data.pipeline_numpy import ten_crop_numpy

    return ten_crop_numpy(batch_images, size)


def __getattr__(name: str) -> Any:
    if name in _TF_NAMES:
        return getattr(importlib.import_module("core.data.pipeline_tf"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
