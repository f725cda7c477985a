"""Training: a typed config and presets in, a trained model, checkpoints and a history out.

Configs and presets import without Keras (the HTTP service validates them); the trainer loads
Keras and TensorFlow on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from core.training.config import (
    PRESETS,
    Hyperparameters,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    dotted_paths,
    make_config,
    override_at,
    resolve_config,
)
from core.training.hooks import EpochRecord, ProgressEvent, TrainHooks

if TYPE_CHECKING:
    from core.training.trainer import TrainResult, freeze_layers, train, transfer_weights

_LAZY = {"TrainResult", "freeze_layers", "train", "transfer_weights"}

__all__ = [
    "PRESETS",
    "EpochRecord",
    "Hyperparameters",
    "OptimizerConfig",
    "ProgressEvent",
    "ScheduleConfig",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "apply_overrides",
    "dotted_paths",
    "freeze_layers",
    "make_config",
    "override_at",
    "resolve_config",
    "train",
    "transfer_weights",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("core.training.trainer"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
