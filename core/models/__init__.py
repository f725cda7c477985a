"""ResNet architectures: `build_model(name)`, the catalogue and its parameter/FLOP counts.

The names and specs (`core.models.specs`) import without Keras, so the HTTP service can validate
architectures without loading TensorFlow; the builder and layers load Keras on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from core.models.specs import CATALOGUE_NAMES, ArchSpec, parse_architecture

if TYPE_CHECKING:
    from core.models.builder import build_model
    from core.models.layers import CUSTOM_OBJECTS, Preprocess, ZeroPadShortcut
    from core.models.stats import count_flops, count_trainable_params

_LAZY = {
    "build_model": "core.models.builder",
    "CUSTOM_OBJECTS": "core.models.layers",
    "Preprocess": "core.models.layers",
    "ZeroPadShortcut": "core.models.layers",
    "count_flops": "core.models.stats",
    "count_trainable_params": "core.models.stats",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
