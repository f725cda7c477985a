"""Published ImageNet weights for our ResNets: Keras applications' and torchvision's files.

The readers and the checks (:mod:`.files`, :mod:`.plans`, the format modules) need NumPy and
h5py only, so the API process checks a file named by ``init_from`` without loading TensorFlow;
the importer (:mod:`.importer`), which builds models, loads Keras on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_attributes
from core.models.weights.files import Weights, WeightsFile, open_weights_file
from core.models.weights.plans import LAYOUTS, PREPROCESSING, SOURCES, Layout, Source
from core.models.weights.published import PUBLISHED, PublishedWeights, download_weights, published
from core.models.weights.safetensors import read_safetensors, write_safetensors
from core.models.weights.tensors import WeightsFileError

if TYPE_CHECKING:
    from core.models.weights.exporter import torchvision_state_dict
    from core.models.weights.importer import (
        import_model,
        init_from_weights,
        read_weights,
    )

__all__ = [
    "LAYOUTS",
    "PREPROCESSING",
    "PUBLISHED",
    "SOURCES",
    "Layout",
    "PublishedWeights",
    "Source",
    "Weights",
    "WeightsFile",
    "WeightsFileError",
    "download_weights",
    "import_model",
    "init_from_weights",
    "open_weights_file",
    "published",
    "read_safetensors",
    "read_weights",
    "torchvision_state_dict",
    "write_safetensors",
]

__getattr__ = lazy_attributes(
    __name__,
    {
        "core.models.weights.exporter": ("torchvision_state_dict",),
        "core.models.weights.importer": (
            "import_model",
            "init_from_weights",
            "read_weights",
        ),
    },
)
