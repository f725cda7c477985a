"""Throughput measurements that the CLI and the benchmark scripts share.

Data is synthetic and in memory (a few batches of uint8 pixels, cached and repeated), so the
numbers measure the model, the optimizer and the framework rather than an input pipeline.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import keras
import numpy as np

from core.catalogue import NUM_CLASSES
from core.models import build_model, count_trainable_params, parse_architecture
from core.training.precision import jit_compile, resolve_policy

DISTINCT_BATCHES = 8


def train_throughput(
    arch: str,
    *,
    batch_size: int = 128,
    precision: str = "float32",
    steps: int = 50,
    warmup: int = 10,
    input_shape: tuple[int, int, int] | None = None,
    xla: bool = False,
) -> dict[str, Any]:
    """Training images per second of one architecture on synthetic data.

    The model is built as training builds it (weight decay, the family's head: 10 classes for
    CIFAR nets, 1000 for ImageNet nets) and compiled with SGD with momentum. ``warmup`` steps run
    first (tracing, XLA compilation, allocator growth) and are not timed; then ``steps`` steps are.

    Args:
        arch: an architecture name, e.g. ``"resnet20"`` or ``"resnet50"``.
        batch_size: images per step.
        precision: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (see
            :func:`core.training.precision.resolve_policy`).
        steps: timed training steps.
        warmup: untimed steps before them.
        input_shape: (H, W, C); default: the architecture's (32×32×3 or 224×224×3).
        xla: compile the train step with XLA (``jit_compile``; always on under JAX).

    Returns:
        ``architecture``, ``input_shape``, ``batch_size``, ``precision``, ``dtype_policy``,
        ``xla``, ``steps``, ``warmup``, ``params``, ``warmup_seconds``, ``seconds``,
        ``step_ms``, ``images_per_second``, ``backend`` and ``devices``.

    Raises:
        ValueError: an unknown architecture or precision, or a non-positive size.
    """
    if precision not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(
            f"Unknown precision: {precision!r}. Expected one of auto, float32, bfloat16, float16."
        )
    if batch_size < 1 or steps < 1 or warmup < 0:
        raise ValueError(
            f"batch_size and steps must be >= 1 and warmup >= 0; got {batch_size}, {steps}, "
            f"{warmup}."
        )
    spec = parse_architecture(arch)
    h, w, c = input_shape if input_shape is not None else spec.default_input_shape
    shape = (int(h), int(w), int(c))
    classes = NUM_CLASSES[spec.family]
    policy = resolve_policy(precision)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model(
        spec, input_shape=shape, num_classes=classes, dtype_policy=policy, weight_decay=1e-4
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=jit_compile(xla),
    )
    data = _synthetic_batches(batch_size, shape, classes)

    started = time.perf_counter()
    if warmup:
        model.fit(data, epochs=1, steps_per_epoch=warmup, shuffle=False, verbose=0)
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # fit returns only once its last step has finished (its logs are read back), so the
    # wall time covers every timed step and nothing after them.
    model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    seconds = time.perf_counter() - started
    result = {
        "architecture": spec.name,
        "input_shape": list(shape),
        "batch_size": batch_size,
        "precision": precision,
        "dtype_policy": policy or "float32",
        "xla": xla,
        "steps": steps,
        "warmup": warmup,
        "params": count_trainable_params(model),
        "warmup_seconds": warmup_seconds,
        "seconds": seconds,
        "step_ms": 1000.0 * seconds / steps,
        "images_per_second": batch_size * steps / seconds,
        "backend": keras.backend.backend(),
        "devices": _devices(),
    }
    del model
    keras.backend.clear_session()
    return result


def _synthetic_batches(batch_size: int, shape: tuple[int, ...], classes: int) -> Any:
    """A few distinct batches of uint8 pixels, repeated forever.

    uint8 rather than float32: a quarter of the bytes to copy to an accelerator per step; the
    model casts its input.
    """
    rng = np.random.default_rng(0)
    n = batch_size * DISTINCT_BATCHES
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = rng.integers(0, classes, size=(n,), dtype=np.int64)
    if keras.backend.backend() != "tensorflow":
        return _RepeatedBatches(images, labels, batch_size)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.batch(batch_size, drop_remainder=True).cache().repeat().prefetch(tf.data.AUTOTUNE)


class _RepeatedBatches(keras.utils.PyDataset):
    """The same few batches forever, for backends without tf.data (no copying per step)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self._batches = [
            (images[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, len(images) - batch_size + 1, batch_size)
        ]

    @property
    def num_batches(self) -> None:
        return None

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self._batches[index % len(self._batches)]


def _devices() -> list[str]:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            names = []
            for gpu in gpus:
                details = tf.config.experimental.get_device_details(gpu)
                names.append(str(details.get("device_name", gpu.name)))
            return names
    elif keras.backend.backend() == "jax":
        import jax

        return [str(d.device_kind) for d in jax.devices()]
    return [f"CPU ({platform.processor() or platform.machine()})"]
