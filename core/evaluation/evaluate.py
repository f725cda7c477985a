"""Run a model over a dataset or an array and score it.

Under TensorFlow the forward pass is one ``tf.function`` traced once for any batch size
(``model(x, training=False)``), rather than ``model.predict``, whose per-call set-up dominates on
small batches. Under other backends (JAX) it is Keras' compiled ``predict_on_batch``, and
datasets are any iterable of ``(images, labels)`` batches (the NumPy pipeline's).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np

from core.environment import keras_backend
from core.evaluation.predictions import Predictions


def make_forward(model: keras.Model, *, ten_crop: bool = False) -> Any:
    """A compiled inference function: float32 pixel batch in, probabilities out.

    With ``ten_crop``, each image (at least the model's input size) gives its four corner crops,
    its centre crop and the mirror images of all five; their probabilities are averaged — the
    10-crop testing of He et al. (2016, §3.4), which is done on images whose shorter side has
    been resized to 256 for 224×224 crops.
    """
    h, w, c = _input_shape(model)
    if keras_backend() != "tensorflow":
        return _forward_other_backends(model, (h, w, c), ten_crop=ten_crop)
    import tensorflow as tf

    if not ten_crop:
        signature = [tf.TensorSpec((None, h, w, c), tf.float32)]
        return tf.function(lambda x: model(x, training=False), input_signature=signature)

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, c), tf.float32)])
    def forward(x: tf.Tensor) -> tf.Tensor:
        big_h, big_w = tf.shape(x)[1], tf.shape(x)[2]
        tf.debugging.assert_greater_equal(
            tf.stack([big_h, big_w]),
            tf.constant([h, w]),
            message=f"ten_crop needs images of at least {h}x{w}",
        )
        offsets = [
            (0, 0),
            (0, big_w - w),
            (big_h - h, 0),
            (big_h - h, big_w - w),
            ((big_h - h) // 2, (big_w - w) // 2),
        ]
        crops = [x[:, top : top + h, left : left + w, :] for top, left in offsets]
        crops += [tf.reverse(crop, axis=[2]) for crop in crops]
        batch = tf.shape(x)[0]
        probs = model(tf.concat(crops, axis=0), training=False)
        return tf.reduce_mean(tf.reshape(probs, (10, batch, -1)), axis=0)

    return forward


def _forward_other_backends(
    model: keras.Model, shape: tuple[int, int, int], *, ten_crop: bool
) -> Any:
    """The forward pass where ``tf.function`` cannot trace the model (JAX): Keras compiles
    ``predict_on_batch`` once per batch shape; ten crops are cut in NumPy."""
    h, w, _ = shape

    def forward(x: Any) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if not ten_crop:
            return np.asarray(model.predict_on_batch(x))
        if x.shape[1] < h or x.shape[2] < w:
            raise ValueError(f"ten_crop needs images of at least {h}x{w}; got {x.shape[1:3]}")
        from core.data.pipeline_numpy import ten_crop_numpy

        crops = ten_crop_numpy(x, (h, w))  # (B, 10, h, w, C)
        batch = len(x)
        probs = np.asarray(model.predict_on_batch(crops.reshape(batch * 10, *crops.shape[2:])))
        return probs.reshape(batch, 10, -1).mean(axis=1)

    return forward


def predict_arrays(model: keras.Model, images: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """Probabilities of an (N, H, W, C) array of pixels in [0, 255], as an (N, K) float32 array."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != _input_shape(model):
        raise ValueError(
            f"images must have shape (N, {', '.join(map(str, _input_shape(model)))}); "
            f"got {images.shape}."
        )
    forward = make_forward(model)
    k = model.output_shape[-1]
    out = [
        keras.ops.convert_to_numpy(forward(images[i : i + batch_size].astype(np.float32)))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, k), np.float32)


def predict_dataset(
    model: keras.Model,
    dataset: Iterable[Any],
    *,
    steps: int | None = None,
    ten_crop: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The model's outputs on a batched dataset of ``(images, labels)``, in the dataset's order.

    Returns:
        ``(probabilities (N, K), labels as the dataset yields them, seconds)``: the wall time
        of the pass, input pipeline included, tracing excluded.
    """
    forward = make_forward(model, ten_crop=ten_crop)
    h, w, c = _input_shape(model)
    # Trace before the clock starts: the first batch should not pay for graph building.
    if ten_crop and hasattr(forward, "get_concrete_function"):
        forward.get_concrete_function()
    elif not ten_crop:
        forward(np.zeros((1, h, w, c), np.float32))
    if steps is not None:
        dataset = (
            dataset.take(steps) if hasattr(dataset, "take") else itertools.islice(dataset, steps)
        )

    all_probs: list[np.ndarray] = []
    all_labels: list[np.ndarray] = []
    start = time.perf_counter()
    for images, labels in dataset:
        if len(images.shape) != 4:
            raise ValueError(f"expected batched images (B, H, W, C); got shape {images.shape}.")
        if not ten_crop and tuple(images.shape[1:]) != (h, w, c):
            raise ValueError(
                f"images of shape {tuple(images.shape[1:])} do not fit the model's input "
                f"{(h, w, c)}; resize them in the dataset or use ten_crop."
            )
        all_probs.append(keras.ops.convert_to_numpy(forward(np.asarray(images, np.float32))))
        all_labels.append(np.asarray(labels))
    seconds = time.perf_counter() - start
    if not all_probs:
        raise ValueError("the dataset yielded no batches.")
    return np.concatenate(all_probs), np.concatenate(all_labels), seconds


def evaluate_model(model: keras.Model, dataset: Iterable[Any], **options: Any) -> dict[str, Any]:
    """Score a model on a batched dataset: :func:`score_dataset`'s metrics alone (same options:
    ``class_names``, ``multi_label``, ``steps``, ``ten_crop``, ``threshold``)."""
    metrics, _ = score_dataset(model, dataset, **options)
    return metrics


def score_dataset(
    model: keras.Model,
    dataset: Iterable[Any],
    *,
    class_names: Sequence[str],
    multi_label: bool = False,
    steps: int | None = None,
    ten_crop: bool = False,
    threshold: float = 0.5,
    ids: Sequence[str] | None = None,
) -> tuple[dict[str, Any], Predictions]:
    """Score a model on a batched dataset of ``(images, labels)``, keeping its predictions.

    Args:
        model: a model from :func:`core.models.build_model` (pixels in [0, 255] in).
        dataset: batches of images (B, H, W, C) and labels: class indices (B,) or (B, 1), or
            one-hot (B, K) for single-label data, an indicator matrix (B, K) for multi-label data.
        class_names: the K class names.
        multi_label: score with :func:`multilabel_metrics` instead of
            :func:`classification_metrics`.
        steps: evaluate only the first ``steps`` batches.
        ten_crop: average over ten crops (see :func:`make_forward`); images may then be larger
            than the model's input.
        threshold: the multi-label decision threshold.
        ids: one name per image of the dataset, in its order (default: ``"0"``, ``"1"``, …).

    Returns:
        The metrics, plus ``seconds`` (wall time of the pass, input pipeline included, tracing
        excluded), ``images_per_second`` and ``ten_crop``; and the predictions they were
        computed from (:meth:`Predictions.score` gives the same metrics again).
    """
    probs, labels, seconds = predict_dataset(model, dataset, steps=steps, ten_crop=ten_crop)
    n = len(probs)
    names = [str(i) for i in range(n)] if ids is None else list(ids)[:n]
    predictions = Predictions.from_outputs(
        probs, labels, class_names, multi_label=multi_label, ids=names
    )
    metrics = predictions.score(threshold=threshold)
    summary = {
        **metrics,
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else None,
        "ten_crop": ten_crop,
    }
    return summary, predictions


def _input_shape(model: keras.Model) -> tuple[int, int, int]:
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4 or None in shape[1:]:
        raise ValueError(f"expected a model with one fixed (H, W, C) input; got {shape}.")
    return int(shape[1]), int(shape[2]), int(shape[3])
