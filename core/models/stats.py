"""Parameter and FLOP counts of a built model."""

from __future__ import annotations

import math

import keras


def count_trainable_params(model: keras.Model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def count_flops(model: keras.Model) -> int:
    """Forward multiply-accumulates per image of the conv and dense layers.

    This is the paper's convention ("FLOPs" = multiply-adds: 3.6 G for ResNet-34, 3.8 G for
    ResNet-50 v1); batch norm, ReLU, additions and pooling are not counted.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * (c_in // layer.groups)
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
