"""Custom layers. Each is registered for `.keras` serialization and uses `keras.ops` only."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

PACKAGE = "resnet_service"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZeroPadShortcut(keras.layers.Layer):
    """He et al.'s option A shortcut: identity, subsampled by `stride`, channels zero-padded.

    Parameter-free, so a plain twin (no shortcut) has exactly the same parameter count.
    """

    def __init__(self, out_channels: int, stride: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def call(self, inputs: Any) -> Any:
        x = inputs
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        extra = self.out_channels - x.shape[-1]
        if extra > 0:
            # Split the padding evenly on both sides, as the reference CIFAR implementations do.
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
        return x

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, _ = input_shape
        s = self.stride
        h = None if h is None else (h + s - 1) // s
        w = None if w is None else (w + s - 1) // s
        return (n, h, w, self.out_channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_channels": self.out_channels, "stride": self.stride}


NORMALIZATIONS = ("per_pixel_mean", "per_channel", "scale", "none")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Preprocess(keras.layers.Layer):
    """Input normalisation stored inside the model, so evaluation and inference repeat training's.

    Takes pixels in [0, 255] and applies one of:
    - ``per_pixel_mean``: subtract the training set's mean image (He et al. 2016, §4.2), then /255;
    - ``per_channel``: subtract the per-channel mean and divide by the per-channel std;
    - ``scale``: divide by 255;
    - ``none``: pass through.

    ``resize`` records how inference should bring an arbitrary image to the input size:
    ``"direct"`` (resize to the input size) or ``"crop"`` (resize the shorter side to
    size/0.875, then centre-crop: ImageNet's 256→224 evaluation).
    """

    def __init__(
        self,
        mode: str = "scale",
        image_shape: tuple[int, int, int] | list[int] = (32, 32, 3),
        resize: str = "direct",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalization {mode!r}. Expected one of {NORMALIZATIONS}.")
        if resize not in ("direct", "crop"):
            raise ValueError(f"Unknown resize policy {resize!r}. Expected 'direct' or 'crop'.")
        self.mode = mode
        self.image_shape = tuple(int(d) for d in image_shape)
        self.resize = resize
        h, w, c = self.image_shape
        mean_shape = (h, w, c) if mode == "per_pixel_mean" else (c,)
        self.mean = self.add_weight(
            name="mean", shape=mean_shape, initializer="zeros", trainable=False
        )
        self.std = self.add_weight(name="std", shape=(c,), initializer="ones", trainable=False)

    def set_statistics(self, mean: np.ndarray, std: np.ndarray | None = None) -> None:
        """Store the training set's statistics (pixels in [0, 255])."""
        self.mean.assign(np.asarray(mean, dtype="float32").reshape(self.mean.shape))
        if std is not None:
            self.std.assign(np.asarray(std, dtype="float32").reshape(self.std.shape))

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        if self.mode == "per_pixel_mean":
            return (x - self.mean) / 255.0
        if self.mode == "per_channel":
            return (x - self.mean) / ops.maximum(self.std, 1e-3)
        if self.mode == "scale":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "mode": self.mode,
            "image_shape": list(self.image_shape),
            "resize": self.resize,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNorm(keras.layers.BatchNormalization):
    """Batch normalisation with a hand-written backward pass, for training speed.

    Same weights, config and inference path as Keras' layer. In training, Keras' version lets
    autodiff differentiate through the batch statistics and, under mixed precision, casts the
    activations to float32 and back several times. Here the activations are cast once, the
    statistics take one pass each, and the gradient is the closed form

        dx = a·dy − a/n·Σdy − a·rstd/n·Σ(dy·x̂)·(x − μ),   a = γ·rstd

    computed in float32: fewer passes over the largest tensors of the network (a 1.1–1.3× faster
    training step on CPUs; see docs/benchmarks.md). Uses `keras.ops` only, so it runs on every
    backend.
    """

    def get_config(self) -> dict[str, Any]:
        # Synchronised statistics are how a multi-worker run trains (set on the live layers by
        # core.training.distribution), not part of the model: a saved model loads on any backend.
        return {**super().get_config(), "synchronized": False}

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not (training and self.trainable) or mask is not None or len(inputs.shape) != 4:
            return super().call(inputs, training=training, mask=mask)
        if self.axis not in (-1, 3) or not (self.center and self.scale) or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        if self.synchronized:
            # Statistics over every replica's share of the batch (multi-worker training):
            # Keras' path all-reduces them, and autodiff carries the gradient through that.
            return super().call(inputs, training=training, mask=mask)
        # Copies, not the variables: TF's custom_gradient refuses functions that read variables.
        y, mean, var = _batch_norm_train(
            inputs, ops.copy(self.gamma), ops.copy(self.beta), self.epsilon
        )
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + ops.stop_gradient(mean) * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + ops.stop_gradient(var) * (1.0 - m))
        return y


def _batch_norm_train(x: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
    compute_dtype = x.dtype

    @ops.custom_gradient
    def forward(x: Any, gamma: Any, beta: Any) -> Any:
        axes = (0, 1, 2)
        shape = ops.shape(x)
        n = ops.cast(shape[0] * shape[1] * shape[2], "float32")
        xf = ops.cast(x, "float32")
        mean = ops.mean(xf, axis=axes)
        # E[x²] − E[x]²: one pass over x instead of two; float32 keeps it accurate for
        # post-convolution activations, whose mean is not large against their spread.
        var = ops.maximum(ops.mean(ops.square(xf), axis=axes) - ops.square(mean), 0.0)
        rstd = ops.rsqrt(var + epsilon)
        a = gamma * rstd
        y = ops.cast(xf * a + (beta - mean * a), compute_dtype)

        def grad(*args: Any, upstream: Any = None) -> Any:
            g = upstream if upstream is not None else args
            if len(g) == 1 and isinstance(g[0], tuple | list):  # JAX passes one tuple
                g = g[0]
            dy = ops.cast(g[0], "float32")
            sum_dy = ops.sum(dy, axis=axes)
            sum_dy_xhat = rstd * (ops.sum(dy * xf, axis=axes) - mean * sum_dy)
            k1 = -a * rstd * sum_dy_xhat / n
            k0 = -a * sum_dy / n - k1 * mean
            dx = ops.cast(dy * a + (xf * k1 + k0), compute_dtype)
            return dx, sum_dy_xhat, sum_dy

        return (y, mean, var), grad

    return forward(x, gamma, beta)


CUSTOM_OBJECTS = {
    "ZeroPadShortcut": ZeroPadShortcut,
    "Preprocess": Preprocess,
    "BatchNorm": BatchNorm,
}
