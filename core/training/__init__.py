"""Training: a typed config and presets in, a trained model, checkpoints and a history out."""

from core.training.config import PRESETS, OptimizerConfig, ScheduleConfig, TrainConfig, make_config
from core.training.hooks import EpochRecord, ProgressEvent, TrainHooks
from core.training.trainer import TrainResult, freeze_layers, train, transfer_weights

__all__ = [
    "PRESETS",
    "EpochRecord",
    "OptimizerConfig",
    "ProgressEvent",
    "ScheduleConfig",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "freeze_layers",
    "make_config",
    "train",
    "transfer_weights",
]
