"""Our BatchNorm: the same outputs, gradients and moving statistics as Keras' layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.models.layers import BatchNorm


def run(layer, x, w, training):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * w)
    dx, dg, db = tape.gradient(loss, [xt, layer.gamma, layer.beta])
    return [
        np.asarray(v, np.float32) for v in (y, dx, dg, db, layer.moving_mean, layer.moving_variance)
    ]


@pytest.mark.parametrize("training", [True, False])
def test_outputs_gradients_and_statistics_equal_keras_batch_normalization(training):
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 2.0, (8, 5, 5, 6)).astype("float32")
    w = rng.normal(size=x.shape).astype("float32")
    layers = [
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
        BatchNorm(momentum=0.9, epsilon=1e-5),
    ]
    for layer in layers:
        layer.build(x.shape)
        layer.gamma.assign((np.arange(1, 7) / 3).astype("float32"))
        layer.beta.assign(np.linspace(-0.3, 0.3, 6).astype("float32"))
    ref, ours = (run(layer, x, w, training) for layer in layers)
    for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "mean", "var"], ref, ours, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5, err_msg=name)


def test_bfloat16_training_stays_close_to_float32():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (16, 4, 4, 8)).astype("float32")
    w = rng.normal(size=x.shape).astype("float32")
    f32 = BatchNorm(epsilon=1e-5)
    b16 = BatchNorm(epsilon=1e-5, dtype="mixed_bfloat16")
    y32, dx32, *_ = run(f32, x, w, True)
    y16, dx16, *_ = run(b16, x, w, True)
    assert b16.compute_dtype == "bfloat16"
    np.testing.assert_allclose(y16, y32, atol=0.05)
    np.testing.assert_allclose(dx16, dx32, atol=0.05)


JAX_CHECK = """
import jax, jax.numpy as jnp, keras, numpy as np
from core.models.layers import BatchNorm
rng = np.random.default_rng(0)
x = rng.normal(0.5, 2.0, (8, 5, 5, 6)).astype("float32")
w = rng.normal(size=x.shape).astype("float32")
g = (np.arange(1, 7) / 3).astype("float32")
b = np.linspace(-0.3, 0.3, 6).astype("float32")
outs = []
for layer in (keras.layers.BatchNormalization(epsilon=1e-5), BatchNorm(epsilon=1e-5)):
    layer.build(x.shape)
    def loss(xv, gv, bv):
        layer.gamma.assign(gv)
        layer.beta.assign(bv)
        y = layer(xv, training=True)
        return jnp.sum(y * w), y
    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(x, g, b)
    outs.append([np.asarray(y)] + [np.asarray(v) for v in grads])
print(max(float(np.max(np.abs(a - c))) for a, c in zip(*outs)))
"""


@pytest.mark.slow
def test_under_jax_too(tmp_path):
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    proc = subprocess.run(
        [sys.executable, "-c", JAX_CHECK], capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 2e-5
