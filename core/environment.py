"""What a run ran on: Python, TensorFlow, Keras, CUDA, devices. Recorded with every run."""

from __future__ import annotations

import platform
from typing import Any


def describe_environment() -> dict[str, Any]:
    """Versions and devices of this process, for reproducibility bundles (loads Keras)."""
    import keras

    env: dict[str, Any] = {
        "source": "worker",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        env["tensorflow"] = tf.__version__
        env["cuda"] = build.get("cuda_version")
        env["cudnn"] = build.get("cudnn_version")
        env["devices"] = [
            tf.config.experimental.get_device_details(d).get("device_name", d.name)
            for d in tf.config.list_physical_devices("GPU")
        ] or ["CPU"]
    elif keras.backend.backend() == "jax":
        import jax

        env["jax"] = jax.__version__
        env["devices"] = [d.device_kind for d in jax.devices()]
    return env
