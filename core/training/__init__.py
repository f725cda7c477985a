"""Training: a typed config and presets in, a trained model, checkpoints and a history out.

Configs and presets import without Keras (the HTTP service validates them); the trainer loads
Keras and TensorFlow on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_attributes
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


__getattr__ = lazy_attributes(
    __name__,
    {"core.training.trainer": ("TrainResult", "freeze_layers", "train", "transfer_weights")},
)
