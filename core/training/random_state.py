"""The random-number state a `.keras` file leaves out, kept beside the checkpoint instead.

Keras saves a model's weights and its optimizer, but not the state of the layers' seed
generators (dropout's): a model loaded from a checkpoint would draw its masks afresh, and a
resumed run would leave the path of the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


def _seed_states(model: keras.Model) -> list[Any]:
    # `variables` are the weights plus every layer's seed-generator state; the weights are saved.
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


def random_states(model: keras.Model) -> list[list[int]]:
    """The seed generators' states, in layer order, as JSON-ready lists."""
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in _seed_states(model)]


def restore_random_states(model: keras.Model, states: list[list[int]]) -> None:
    """Put back what :func:`random_states` returned for the same architecture."""
    variables = _seed_states(model)
    if len(variables) != len(states):
        raise ValueError(
            f"checkpoint holds {len(states)} random states; model has {len(variables)}"
        )
    for variable, state in zip(variables, states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype))
