"""Typed training configuration and the named presets.

A config is plain data (pydantic), validated on construction and stored with every checkpoint,
so a run can be resumed or repeated from its record alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.data.augment import AUGMENT_HELP, AugmentParams, parse_augment
from core.models.limits import OutOfBounds, check_input_shape, check_spec_size
from core.models.specs import CATALOGUE_NAMES, ArchSpec, Padding, StrideIn, parse_architecture

Precision = Literal["auto", "float32", "bfloat16", "float16"]
Normalization = Literal["per_pixel_mean", "per_channel", "scale", "none"]


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


class Hyperparameters(_Strict):
    """How to train: every field a preset sets and a request or a command line may override.

    :class:`TrainConfig` adds what to train and on what (architecture, data, preset, a model to
    start from). The service declares its request body on this class, so the bounds below are
    written once and the API documents and enforces the same ones.
    """

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    shortcut: Literal["A", "B"] | None = None
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    stride_in: StrideIn = Field(
        "3x3",
        description="Where a downsampling bottleneck puts its stride: 3x3 (v1.5, torchvision's "
        "weights) or 1x1 (v1, keras.applications' weights); ImageNet bottleneck nets only",
    )
    padding: Padding = Field(
        "same",
        description="How strided convolutions pad: same (TensorFlow's) or symmetric (Caffe's "
        "and PyTorch's, which published weights need)",
    )
    input_shape: tuple[int, int, int] | None = None
    normalization: Normalization = "per_pixel_mean"
    augment: str = Field("cifar", max_length=200, description=AUGMENT_HELP)
    augment_params: AugmentParams = AugmentParams()
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
    freeze: list[str] = Field(
        default_factory=list, description="Layer prefixes to freeze: stem, stage1…"
    )
    backbone_lr_multiplier: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="The learning rate of every layer but the head (logits), as a fraction of "
        "the schedule's: discriminative fine-tuning (the new head learns at the full rate)",
    )
    tensorboard: bool = True
    keep_epoch_checkpoints: bool = False

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

    @field_validator("augment")
    @classmethod
    def _known_augmentation(cls, v: str, info: ValidationInfo) -> str:
        spec = parse_augment(v)  # unknown names, two of a kind, no base: a ValueError
        # The data precedes how to train (see TrainConfig); in a request it may be absent.
        data = info.data.get("data")
        if spec.mixes_labels and isinstance(data, str) and _is_multi_label(data):
            raise ValueError(
                f"{spec.mix} mixes one class label per image; {data.split(':', 1)[0]} data is "
                "multi-label, so it is refused (train it without mixup or cutmix)"
            )
        return spec.name

    @field_validator("input_shape")
    @classmethod
    def _input_shape_in_bounds(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        return None if v is None else check_input_shape(v)  # the bounds: core.models.limits

    @field_validator("freeze")
    @classmethod
    def _freeze_prefixes(cls, v: list[str]) -> list[str]:
        allowed = {"stem", "stage1", "stage2", "stage3", "stage4"}
        bad = [p for p in v if p not in allowed]
        if bad:
            raise ValueError(f"unknown prefixes {bad}; expected some of {sorted(allowed)}")
        return v


class _WhatToTrain(_Strict):
    """The architecture, the data source and the preset: what a run is, before how it trains."""

    architecture: str = Field(..., description="e.g. resnet20, plain56, resnet50, wrn28_10")
    data: str = Field(..., description="The data source: KIND:PATH, e.g. cifar10:/data/c10.tar.gz")
    preset: str | None = Field(None, description=f"One of {', '.join(PRESETS)}")

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str) -> str:
        try:
            parse_architecture(v)
        except ValueError as exc:
            message = str(exc)
            # e.g. a depth no ResNet has: list the names too (a bound is named, not listed)
            if "Expected one of" not in message and not isinstance(exc, OutOfBounds):
                message += f" Expected one of {', '.join(CATALOGUE_NAMES)}, or another valid depth."
            raise ValueError(message) from None
        return v.strip().lower()

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"Unknown preset: {v!r}. Expected one of {', '.join(PRESETS)}")
        return v

    @model_validator(mode="after")
    def _data_kind(self) -> _WhatToTrain:
        if ":" not in self.data and self.data not in _PATHLESS_SOURCES:
            raise ValueError(
                f"data must be KIND:PATH or one of {sorted(_PATHLESS_SOURCES)}; got {self.data!r}"
            )
        return self


# pydantic orders fields base by base from the last base: what to train comes first in every
# dump (config.json, the API's ``config``), then how.
class TrainConfig(Hyperparameters, _WhatToTrain):
    """Everything one training run needs. Defaults are the paper's CIFAR recipe where it has one.

    The only validator of a training config: every error names its field and, for names
    (architectures, presets, precisions…), lists the valid ones.
    """

    init_from: str | None = Field(
        None,
        description="Weights to start from: a .keras model, or a published weights file "
        "(torchvision .safetensors/.pth, keras.applications .h5/.weights.h5; see "
        "core.models.weights). Over HTTP, a path under the data root.",
    )

    @field_validator("stride_in")
    @classmethod
    def _stride_placement_exists(cls, v: StrideIn, info: ValidationInfo) -> StrideIn:
        # The architecture is validated first (what to train precedes how): absent, it failed.
        architecture = info.data.get("architecture")
        if architecture is not None:
            parse_architecture(architecture).with_layout(stride_in=v)
        return v

    @model_validator(mode="after")
    def _work_per_image_in_bounds(self) -> TrainConfig:
        # The architecture and the input shape are each in bounds; together they must be too
        # (a wide net on a large input needs too many multiply-adds per image).
        spec = self.spec
        if self.input_shape is not None:
            check_spec_size(spec, input_shape=self.input_shape)
        return self

    @property
    def spec(self) -> ArchSpec:
        """The architecture with this config's stride placement and padding."""
        return parse_architecture(self.architecture).with_layout(
            stride_in=self.stride_in, padding=self.padding
        )

    @property
    def multi_label(self) -> bool:
        return _is_multi_label(self.data)

    @property
    def mixes_labels(self) -> bool:
        """Training on soft labels (mixup, CutMix): a categorical loss on one-hot labels."""
        return parse_augment(self.augment).mixes_labels

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, math.ceil(n_train / self.batch_size))


def _is_multi_label(data: str) -> bool:
    return data.split(":", 1)[0] == "coco"


def resolve_config(
    architecture: str,
    data: str,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The one way to a training config: the preset's values, then the overrides, validated once.

    The CLI, ``POST /v1/runs`` and every experiment cell come through here.

    Args:
        architecture: e.g. ``resnet20``; validated by :class:`TrainConfig`.
        data: The data source, ``KIND:PATH`` (or a source without a path, ``cifar10``).
        preset: A name in :data:`PRESETS`, or None for the defaults.
        overrides: Dotted path → value, e.g. ``{"schedule.base_lr": 0.05, "epochs": 3}``; a
            section's other fields keep the preset's values. A top-level ``None`` is an
            option left unset (the preset's value stays), as in every front door; inside a
            section ``None`` is applied (``{"schedule.boundaries": None}`` clears the
            preset's iteration boundaries so that ``schedule.boundary_epochs`` counts).

    Raises:
        pydantic.ValidationError: (a ``ValueError``) one entry per bad field, located by its
            path (``("schedule", "base_lr")``): unknown architecture or preset, out-of-range or
            unknown fields.
    """
    given = {
        path: value
        for path, value in (overrides or {}).items()
        if value is not None or "." in path  # a top-level None is an option left unset
    }
    values = apply_overrides(_preset_values(architecture, preset), given)
    values.update(architecture=architecture, data=data, preset=preset)
    return TrainConfig.model_validate(values)


def make_config(
    architecture: str, data: str, *, preset: str | None = None, **overrides: Any
) -> TrainConfig:
    """:func:`resolve_config` with overrides as keywords; nested dicts merge into the preset's.

    A keyword set to ``None`` is left out (the preset's value stays); ``None`` inside a nested
    dict is applied.

    Example:
        >>> make_config("resnet20", "cifar10", preset="cifar-paper", optimizer={"nesterov": True})
    """
    return resolve_config(architecture, data, preset=preset, overrides=dotted_paths(overrides))


def _preset_values(architecture: str, preset: str | None) -> dict[str, Any]:
    """A fresh copy of the preset's fields; empty for no preset or an unknown one (which
    :class:`TrainConfig` then reports with the valid names)."""
    if preset not in PRESETS:
        return {}
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()}
    if preset == "cifar-paper" and _depth(architecture) >= 110:
        values["schedule"] = {**values["schedule"], **_PAPER_WARMUP}
    return values


def _depth(architecture: str) -> int:
    try:
        return parse_architecture(architecture).depth
    except ValueError:
        return 0  # reported by TrainConfig


# --- the override grammar: dotted paths into the config ----------------------------------


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with each dotted path set: ``{"schedule.base_lr": 0.05}`` → nested dicts.

    ``base`` is not changed; sections along a path are copied before they are written.
    """
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for path, value in overrides.items():
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[parts[-1]] = value
    return out


def dotted_paths(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted paths: ``{"optimizer": {"nesterov": True}}`` →
    ``{"optimizer.nesterov": True}`` (the form :func:`resolve_config` takes)."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(dotted_paths(value, prefix=f"{path}."))
        else:
            out[path] = value
    return out


def override_at(loc: Sequence[str | int], paths: Iterable[str]) -> str | None:
    """Which of the override ``paths`` a validation error at ``loc`` is about, if any.

    Example:
        >>> override_at(("schedule", "base_lr"), ["epochs", "schedule.base_lr"])
        'schedule.base_lr'
    """
    parts = tuple(str(p) for p in loc)
    for path in paths:
        steps = tuple(path.split("."))
        if parts[: len(steps)] == steps:
            return path
    return None
