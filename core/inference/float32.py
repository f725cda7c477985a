"""A mixed-precision model as a float32 inference model: the same layers and weights, float32 math.

A model trained under ``mixed_bfloat16`` or ``mixed_float16`` keeps float32 weights but computes
its convolutions in 16 bits, and every export of it traces those 16-bit ops into the graph.
ONNX Runtime's CPU provider has no bfloat16 ``Conv`` (it refuses the graph), TF Serving on a CPU
without bfloat16 instructions emulates it slowly, and float16 kernels are missing on most CPUs:
exports are made from the float32 twin built here instead. The twin is a clone of the model
whose mixed layers get the ``float32`` policy (layers already float32, such as ``Preprocess``
and the softmax head, are cloned as they are), with every weight copied over unchanged — so the
preprocessing inside the graph is exactly training's.
"""

from __future__ import annotations

import keras
import numpy as np

FLOAT32 = "float32"


def is_mixed(layer: keras.layers.Layer) -> bool:
    """Whether the layer computes in 16 bits while keeping float32 weights."""
    policy = layer.dtype_policy
    return bool(policy.compute_dtype != policy.variable_dtype)


def source_precision(model: keras.Model) -> str:
    """The mixed policy the model computes under (``"mixed_bfloat16"``), or ``"float32"``."""
    policies = sorted({layer.dtype_policy.name for layer in model.layers if is_mixed(layer)})
    if len(policies) > 1:
        raise ValueError(f"the model mixes several precision policies: {policies}.")
    return policies[0] if policies else FLOAT32


def float32_model(model: keras.Model) -> keras.Model:
    """The model itself when it computes in float32; else its float32 twin, weights copied.

    Raises:
        ValueError: a weight could not be copied exactly (a layer the clone rebuilt differently).
    """
    if source_precision(model) == FLOAT32:
        return model
    twin = keras.models.clone_model(model, clone_function=_float32_layer)
    for layer in model.layers:
        twin.get_layer(layer.name).set_weights(layer.get_weights())
    _check_same_weights(model, twin)
    return twin


def _float32_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = layer.get_config()
    if is_mixed(layer):
        config["dtype"] = FLOAT32
    return type(layer).from_config(config)


def _check_same_weights(model: keras.Model, twin: keras.Model) -> None:
    """Every variable of the model, bit for bit, in the twin (by layer and position)."""
    for layer in model.layers:
        mine = layer.get_weights()
        theirs = twin.get_layer(layer.name).get_weights()
        if len(mine) != len(theirs) or not all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True)
        ):
            raise ValueError(f"layer {layer.name!r}: its weights did not copy to float32 exactly.")
    if len(twin.weights) != len(model.weights):
        raise ValueError(
            f"the float32 model has {len(twin.weights)} weights; the model {len(model.weights)}."
        )
