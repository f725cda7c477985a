"""ResNet architectures: `build_model(name)`, the catalogue and its parameter/FLOP counts.

The names and specs (`core.models.specs`) import without Keras, so the HTTP service can validate
architectures without loading TensorFlow; the builder and layers load Keras on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_attributes
from core.models.specs import CATALOGUE_NAMES, ArchSpec, parse_architecture

if TYPE_CHECKING:
    from core.models.builder import build_model
    from core.models.layers import CUSTOM_OBJECTS, Preprocess, ZeroPadShortcut
    from core.models.stats import count_flops, count_trainable_params

__all__ = [
    "CATALOGUE_NAMES",
    "CUSTOM_OBJECTS",
    "ArchSpec",
    "Preprocess",
    "ZeroPadShortcut",
    "build_model",
    "count_flops",
    "count_trainable_params",
    "parse_architecture",
]


__getattr__ = lazy_attributes(
    __name__,
    {
        "core.models.builder": ("build_model",),
        "core.models.layers": ("CUSTOM_OBJECTS", "Preprocess", "ZeroPadShortcut"),
        "core.models.stats": ("count_flops", "count_trainable_params"),
    },
)
