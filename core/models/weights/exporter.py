"""Our ResNets' weights in torchvision's names and layouts: the importer's plan, inverted.

A model with torchvision's layout (v1.5 strides, symmetric padding) and preprocessing (ImageNet
mean and std) exports to a state dict that ``torchvision.models.resnetNN().load_state_dict``
takes and that computes the same function there; it can be imported back (``init_from``).
"""

from __future__ import annotations

import keras
import numpy as np

from core.models.specs import ArchSpec, parse_architecture
from core.models.weights.files import PREPROCESS
from core.models.weights.plans import LAYOUTS, PREPROCESSING, make_plan, supports
from core.models.weights.tensors import WeightsFileError


def torchvision_state_dict(model: keras.Model) -> dict[str, np.ndarray]:
    """``model``'s weights as torchvision's state dict (``num_batches_tracked`` included).

    Raises:
        WeightsFileError: an architecture torchvision does not have, or a model whose layout
            or preprocessing is not torchvision's (its weights would compute something else
            there).
    """
    spec = _torchvision_spec(model)
    state: dict[str, np.ndarray] = {}
    for layer, takes in make_plan("torchvision", spec, head=True).items():
        for take, value in zip(takes, model.get_layer(layer).get_weights(), strict=True):
            if take.transpose is not None:
                value = value.transpose(np.argsort(take.transpose))
            state[take.name] = np.ascontiguousarray(value, dtype=np.float32)
            if take.name.endswith(".running_var"):
                tracked = take.name.removesuffix("running_var") + "num_batches_tracked"
                state[tracked] = np.array(0, np.int64)
    return state


def _torchvision_spec(model: keras.Model) -> ArchSpec:
    try:
        spec = parse_architecture(model.name)
    except ValueError:
        raise WeightsFileError(f"model {model.name!r} is not a ResNet of ours") from None
    why = supports("torchvision", spec)
    if why:
        raise WeightsFileError(why)
    names = {layer.name for layer in model.layers}
    strided = model.get_layer("stage2_block1_conv1").strides != (1, 1)
    layout = LAYOUTS["torchvision"]
    if "stem_conv_pad" not in names or (spec.has_stride_choice and strided):
        raise WeightsFileError(
            f"{model.name} does not have torchvision's layout (stride_in={layout.stride_in!r}, "
            f"padding={layout.padding!r}): its weights would compute something else there"
        )
    preprocess = model.get_layer(PREPROCESS)
    expected = PREPROCESSING["torchvision"]
    mean, std = (np.asarray(w) for w in preprocess.get_weights())
    if preprocess.mode != "per_channel" or not (
        np.allclose(mean, expected.mean, rtol=1e-4) and np.allclose(std, expected.std, rtol=1e-4)
    ):
        raise WeightsFileError(
            f"{model.name} does not normalise its input as torchvision does (per_channel with "
            "ImageNet's mean and std): start its training from torchvision weights (init_from)"
        )
    return spec.with_layout(stride_in=layout.stride_in if spec.has_stride_choice else None)
