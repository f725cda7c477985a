"""ResNet architectures: `build_model(name)`, the catalogue and its parameter/FLOP counts."""

from core.models.builder import build_model
from core.models.layers import CUSTOM_OBJECTS, Preprocess, ZeroPadShortcut
from core.models.specs import CATALOGUE_NAMES, ArchSpec, parse_architecture
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
