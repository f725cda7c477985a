"""The batch policies (:mod:`core.data.augment`) inside a ``tf.data`` pipeline.

They are NumPy code, the same the NumPy pipeline runs, called through ``tf.numpy_function`` with
the batch's seed, so a batch's output is a function of that seed alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from core.data.augment.batch import BatchPolicy

# Folded into a batch's seed for the policies' draws, so the base transform keeps its own.
POLICY_STREAM = 0x9E3779B9


def with_policy(
    policy: BatchPolicy | None, x: tf.Tensor, y: tf.Tensor, batch_seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch through the policies after the base transform (:mod:`core.data.augment`).

    They are NumPy code, the same the NumPy pipeline runs, called with the batch's seed: the
    output is a function of that seed alone, as the rest of the pipeline's randomness is.
    """
    if policy is None:
        return x, y
    seed = tf.random.experimental.stateless_fold_in(batch_seed, POLICY_STREAM)
    mixes = policy.spec.mixes_labels

    def run(pixels: np.ndarray, labels: np.ndarray, key: np.ndarray) -> tuple[Any, Any]:
        return policy(pixels, labels, key.tolist())

    out_x, out_y = tf.numpy_function(
        run, [x, y, seed], [tf.float32, tf.float32 if mixes else y.dtype], stateful=False
    )
    out_x.set_shape(x.shape)
    out_y.set_shape([x.shape[0], policy.num_classes] if mixes else y.shape)
    return out_x, out_y
