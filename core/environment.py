"""What a run ran on: Python, the Keras backend and its versions, CUDA, devices.

Recorded with every run. Also the one place that says which Keras backend this process uses and
that turns "this feature needs TensorFlow" into a clear error on the others.
"""

from __future__ import annotations

import os
import platform
from types import ModuleType
from typing import Any


class BackendError(RuntimeError):
    """A feature needs TensorFlow, and this process runs another Keras backend without it."""


def keras_backend() -> str:
    """The Keras backend of this process (``tensorflow``, ``jax``, ``torch``…), as Keras chose it
    (``KERAS_BACKEND``, else ``~/.keras/keras.json``, else TensorFlow). Imports Keras."""
    try:
        import keras
    except ImportError:  # the backend's own package is missing (TensorFlow, by default)
        return os.environ.get("KERAS_BACKEND", "tensorflow")
    return str(keras.backend.backend())


def require_tensorflow(feature: str) -> ModuleType:
    """TensorFlow, for a feature only it provides (TFRecord data, ``tf.distribute``, SavedModel).

    Raises:
        BackendError: TensorFlow cannot be imported here; the message names the feature and the
            backend, instead of an ``ImportError`` traceback from deep inside the feature.
    """
    try:
        import tensorflow as tf
    except ImportError:
        raise BackendError(
            f"{feature} needs TensorFlow, which is not installed in this process; it runs Keras "
            f"on the {keras_backend()!r} backend. Install TensorFlow or do without {feature}."
        ) from None
    return tf


def describe_environment() -> dict[str, Any]:
    """Versions and devices of this process, for reproducibility bundles (loads Keras)."""
    import keras

    backend = keras.backend.backend()
    env: dict[str, Any] = {
        "source": "worker",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "keras": keras.__version__,
        "backend": backend,
    }
    if backend == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        env["tensorflow"] = tf.__version__
        env["cuda"] = build.get("cuda_version")
        env["cudnn"] = build.get("cudnn_version")
        env["devices"] = [
            tf.config.experimental.get_device_details(d).get("device_name", d.name)
            for d in tf.config.list_physical_devices("GPU")
        ] or ["CPU"]
    elif backend == "jax":
        import jax
        import jaxlib

        env["jax"] = jax.__version__
        env["jaxlib"] = jaxlib.__version__
        env["devices"] = [d.device_kind for d in jax.devices()]
    return env
