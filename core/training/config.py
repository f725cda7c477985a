"""Typed training configuration and the named presets.

A config is plain data (pydantic), validated on construction and stored with every checkpoint,
so a run can be resumed or repeated from its record alone.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.models.specs import parse_architecture

Precision = Literal["auto", "float32", "bfloat16", "float16"]
Augment = Literal["none", "cifar", "imagenet"]
Normalization = Literal["per_pixel_mean", "per_channel", "scale", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0.0, le=0.1, description="On kernels only (paper: 1e-4).")


class ScheduleConfig(_Strict):
    """Learning rate against iterations (optimizer steps), as the paper counts it.

    - ``step``: ``base_lr``, multiplied by ``factor`` at each of ``boundaries`` (iterations) or,
      when those are absent, at each of ``boundary_epochs``;
    - ``cosine``: cosine decay from ``base_lr`` to 0 over the run;
    - ``onecycle``: linear rise from base_lr/25 to base_lr over the first 30%, then cosine to ~0;
    - ``constant``.
    A warm-up holds ``warmup_lr`` for the first ``warmup_steps`` (ResNet-110: 0.01 for ~400).
    """

    kind: Literal["step", "cosine", "onecycle", "constant"] = "step"
    base_lr: float = Field(0.1, gt=0.0, le=10.0)
    boundaries: list[int] | None = None
    boundary_epochs: list[int] | None = None
    factor: float = Field(0.1, gt=0.0, le=1.0)
    warmup_steps: int = Field(0, ge=0)
    warmup_lr: float = Field(0.01, gt=0.0)

    @field_validator("boundaries", "boundary_epochs")
    @classmethod
    def _increasing(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(b <= 0 for b in v) or sorted(set(v)) != v):
            raise ValueError(f"must be strictly increasing positive integers; got {v}")
        return v


class TrainConfig(_Strict):
    """Everything one training run needs. Defaults are the paper's CIFAR recipe where it has one."""

    architecture: str = Field(..., description="e.g. resnet20, plain56, resnet50, wrn28_10")
    data: str = Field(..., description="KIND:PATH, e.g. cifar10:/data/cifar-10-python.tar.gz")
    preset: str | None = None
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    shortcut: Literal["A", "B"] | None = None
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    input_shape: tuple[int, int, int] | None = None
    normalization: Normalization = "per_pixel_mean"
    augment: Augment = "cifar"
    validation: float | int | None = Field(
        None, description="Hold out this many training images (or this fraction) for validation."
    )
    train_limit: int | None = Field(None, ge=1, description="Use only the first N training images.")
    test_limit: int | None = Field(None, ge=1)
    precision: Precision = "auto"
    xla: bool = False
    strategy: Literal["auto", "default", "mirrored", "multiworker"] = "auto"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    progress_every: int = Field(20, ge=1, description="Call the progress hook every N batches.")
    init_from: str | None = Field(None, description="A .keras model whose weights to start from.")
    freeze: list[str] = Field(
        default_factory=list, description="Layer prefixes to freeze: stem, stage1…"
    )
    tensorboard: bool = True
    keep_epoch_checkpoints: bool = False

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str) -> str:
        parse_architecture(v)  # raises ValueError naming the valid ones
        return v.strip().lower()

    @field_validator("validation")
    @classmethod
    def _validation_size(cls, v: float | int | None) -> float | int | None:
        if v is None:
            return v
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError(f"a validation fraction must lie in (0, 1); got {v}")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"a validation count must be >= 1; got {v}")
        return v

    @field_validator("freeze")
    @classmethod
    def _freeze_prefixes(cls, v: list[str]) -> list[str]:
        allowed = {"stem", "stage1", "stage2", "stage3", "stage4"}
        bad = [p for p in v if p not in allowed]
        if bad:
            raise ValueError(f"unknown prefixes {bad}; expected some of {sorted(allowed)}")
        return v

    @model_validator(mode="after")
    def _data_kind(self) -> TrainConfig:
        if ":" not in self.data and self.data not in _PATHLESS_SOURCES:
            raise ValueError(
                f"data must be KIND:PATH or one of {sorted(_PATHLESS_SOURCES)}; got {self.data!r}"
            )
        return self

    @property
    def multi_label(self) -> bool:
        return self.data.split(":", 1)[0] == "coco"

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, math.ceil(n_train / self.batch_size))


_PATHLESS_SOURCES = {"cifar10", "cifar100", "mnist", "fashion_mnist"}

# 64k iterations of batch 128 on the 45k/5k split: 352 iterations per epoch → 182 epochs.
PRESETS: dict[str, dict[str, Any]] = {
    "cifar-paper": {
        "epochs": 182,
        "batch_size": 128,
        "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"kind": "step", "base_lr": 0.1, "boundaries": [32_000, 48_000], "factor": 0.1},
        "normalization": "per_pixel_mean",
        "augment": "cifar",
        "validation": 5000,
    },
    "cifar-fast": {
        "epochs": 30,
        "batch_size": 128,
        "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"kind": "onecycle", "base_lr": 0.2},
        "label_smoothing": 0.1,
        "normalization": "per_channel",
        "augment": "cifar",
    },
    "imagenet-paper": {
        "epochs": 90,
        "batch_size": 256,
        "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"kind": "step", "base_lr": 0.1, "boundary_epochs": [30, 60], "factor": 0.1},
        "normalization": "per_channel",
        "augment": "imagenet",
    },
    "coco-multilabel": {
        "epochs": 40,
        "batch_size": 32,
        "input_shape": (448, 448, 3),
        "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"kind": "step", "base_lr": 0.01, "boundary_epochs": [30], "factor": 0.1},
        "normalization": "per_channel",
        "augment": "imagenet",
    },
}
# He et al. §4.2: ResNet-110 warms up at 0.01 until training error < 80% (about 400 iterations).
_PAPER_WARMUP = {"warmup_steps": 400, "warmup_lr": 0.01}


def make_config(
    architecture: str, data: str, *, preset: str | None = None, **overrides: Any
) -> TrainConfig:
    """A config from a preset plus overrides (nested dicts merge into the preset's).

    Raises:
        ValueError: unknown preset; pydantic.ValidationError: invalid values.
    """
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset: {preset!r}. Expected one of {', '.join(PRESETS)}.")
        base = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()}
        depth = parse_architecture(architecture).depth
        if preset == "cifar-paper" and depth >= 110:
            base["schedule"] = {**base["schedule"], **_PAPER_WARMUP}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TrainConfig(architecture=architecture, data=data, preset=preset, **base)
