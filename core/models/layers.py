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


CUSTOM_OBJECTS = {"ZeroPadShortcut": ZeroPadShortcut, "Preprocess": Preprocess}
