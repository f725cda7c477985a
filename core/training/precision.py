"""Choosing the compute precision and the distribution strategy for the hardware at hand."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import keras

from core.environment import BackendError


@functools.cache
def cpu_supports_bfloat16() -> bool:
    """True when the CPU has native bfloat16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_count() -> int:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return sum(d.platform == "gpu" for d in jax.devices())
    return 0


def resolve_policy(precision: str) -> str | None:
    """Map a precision setting to a Keras dtype policy name (None = float32).

    ``auto``: mixed float16 on GPUs, mixed bfloat16 on CPUs that compute it natively, else float32.
    """
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return "mixed_bfloat16"
    if precision == "float16":
        return "mixed_float16"
    if gpu_count():
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_supports_bfloat16() else None


def make_strategy(kind: str) -> Any:
    """A tf.distribute strategy: multi-worker when TF_CONFIG names a cluster, mirrored over GPUs.

    Returns None for the default (single-device) strategy, and for ``auto`` on other backends.

    Raises:
        BackendError: ``mirrored`` or ``multiworker`` asked for on another backend: they are
            ``tf.distribute`` strategies, which only the TensorFlow backend trains under.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if kind in ("mirrored", "multiworker"):
            raise BackendError(
                f"strategy {kind!r} is a tf.distribute strategy and needs the TensorFlow "
                f"backend; this process runs Keras on {backend!r}. Use strategy 'auto' or "
                "'default'."
            )
        return None
    import tensorflow as tf

    if kind == "auto":
        if os.environ.get("TF_CONFIG") and json.loads(os.environ["TF_CONFIG"]).get("cluster"):
            kind = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            return None
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return None


def jit_compile(xla: bool) -> bool:
    """Keras' ``jit_compile`` for a config's ``xla`` setting on this backend.

    On JAX, XLA is the only compiler: without ``jit`` every op of every step is dispatched on
    its own (many times slower), so JAX always compiles. TensorFlow compiles its graphs either
    way and uses XLA only when asked.
    """
    return xla or keras.backend.backend() == "jax"
