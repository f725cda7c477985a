"""Learning-rate schedules counted in iterations, saved with the optimizer in `.keras` files."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from core.models.layers import PACKAGE
from core.training.config import ScheduleConfig


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Step, cosine, one-cycle or constant learning rate, with an optional constant warm-up."""

    def __init__(
        self,
        kind: str,
        base_lr: float,
        total_steps: int,
        boundaries: list[int] | None = None,
        factor: float = 0.1,
        warmup_steps: int = 0,
        warmup_lr: float = 0.01,
    ) -> None:
        self.kind = kind
        self.base_lr = float(base_lr)
        self.total_steps = max(1, int(total_steps))
        self.boundaries = [int(b) for b in boundaries or []]
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        lr = self._main(step)
        if self.warmup_steps:
            lr = ops.where(step < self.warmup_steps, self.warmup_lr, lr)
        return lr

    def _main(self, step: Any) -> Any:
        progress = ops.minimum(step / self.total_steps, 1.0)
        if self.kind == "step":
            drops = (
                sum(ops.cast(step >= b, "float32") for b in self.boundaries)
                if self.boundaries
                else 0.0
            )
            return self.base_lr * ops.power(self.factor, drops)
        if self.kind == "cosine":
            return 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        if self.kind == "onecycle":
            peak = 0.3
            start = self.base_lr / 25.0
            rise = start + (self.base_lr - start) * progress / peak
            fall_t = ops.clip((progress - peak) / (1.0 - peak), 0.0, 1.0)
            fall = 1e-4 * self.base_lr + 0.5 * (self.base_lr - 1e-4 * self.base_lr) * (
                1.0 + ops.cos(math.pi * fall_t)
            )
            return ops.where(progress < peak, rise, fall)
        return ops.convert_to_tensor(self.base_lr, "float32")

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "boundaries": self.boundaries,
            "factor": self.factor,
            "warmup_steps": self.warmup_steps,
            "warmup_lr": self.warmup_lr,
        }


def make_schedule(cfg: ScheduleConfig, *, steps_per_epoch: int, epochs: int) -> ResNetSchedule:
    """Turn a schedule config into a schedule; epoch boundaries become iteration boundaries."""
    boundaries = cfg.boundaries
    if boundaries is None and cfg.boundary_epochs is not None:
        boundaries = [e * steps_per_epoch for e in cfg.boundary_epochs]
    return ResNetSchedule(
        cfg.kind,
        cfg.base_lr,
        total_steps=steps_per_epoch * epochs,
        boundaries=boundaries,
        factor=cfg.factor,
        warmup_steps=cfg.warmup_steps,
        warmup_lr=cfg.warmup_lr,
    )
