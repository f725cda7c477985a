"""Request and response bodies, split by direction: ``XCreate`` in, ``XPublic``/``XsPublic`` out.

The ORM rows (:mod:`jobs.records.models`) never leave the service as they are; responses are
built from them with ``model_validate(row)``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from core.data import KINDS
from core.training.config import PRESETS, TrainConfig
from jobs.records import EvaluationStatus, RunStatus

# --- runs ------------------------------------------------------------------------------------


class _RunCreateBase(BaseModel):
    """What to train: an architecture, the data, a preset, and any hyperparameters to override.

    Name the data with ``dataset`` (a registered dataset's name or id, see ``/v1/datasets``) or,
    for sources without a path, ``data`` (``synthetic:N:HxWxC:K``, ``cifar10``, ``cifar100``,
    ``mnist``, ``fashion_mnist``). Every other field overrides the preset (or the defaults);
    nested ``optimizer`` and ``schedule`` objects merge into the preset's.
    """

    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(..., description="e.g. resnet20, resnet50, wrn28_10", min_length=1)
    dataset: str | None = Field(None, description="A registered dataset's name or id.")
    data: str | None = Field(
        None, description="A source without a path, e.g. synthetic:512:32x32x3:10"
    )
    preset: str | None = Field(None, description=f"One of {', '.join(PRESETS)}")


# Fields of TrainConfig a client may not set over HTTP: ``init_from`` names a file on the
# workers' disks (fine-tuning from another run's model is left for later).
NOT_OVER_HTTP = frozenset({"init_from"})


def _override_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in TrainConfig.model_fields.items():
        if name in _RunCreateBase.model_fields or name in NOT_OVER_HTTP:
            continue
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            # A partial object, merged into the preset's and validated by TrainConfig.
            annotation = dict[str, Any]
        description = info.description or f"Overrides the preset; default {info.default!r}"
        fields[name] = (annotation | None, Field(None, description=description))
    return fields


# The body of POST /v1/runs: the fields above plus every TrainConfig hyperparameter, generated
# so that a new TrainConfig field is accepted (and documented) without touching the service.
if TYPE_CHECKING:
    RunCreate = _RunCreateBase
else:
    RunCreate = create_model(
        "RunCreate",
        __base__=_RunCreateBase,
        __doc__=_RunCreateBase.__doc__,
        **_override_fields(),
    )


class RunProgress(BaseModel):
    """Where a running run is, as its worker last reported."""

    model_config = ConfigDict(extra="allow")

    epoch: int | None = Field(None, description="1-based")
    epochs: int | None = None
    batch: int | None = Field(None, description="1-based, within the epoch")
    batches: int | None = None
    fraction: float | None = Field(None, description="Progress through the epoch, 0..1")
    eta_seconds: float | None = Field(None, description="Estimated time to the end of the run")
    images_per_second: float | None = None
    loss: float | None = None
    accuracy: float | None = None


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: RunStatus
    cancel_requested: bool
    architecture: str
    dataset: str = Field(..., description="The data source (KIND:PATH under the data root)")
    dataset_id: str | None
    config: dict[str, Any] = Field(..., description="The full validated training config")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    attempts: int
    max_attempts: int
    worker_host: str | None
    error: str | None
    epochs_planned: int | None
    epochs_completed: int
    progress: RunProgress | None
    eta_seconds: float | None = Field(None, description="While running: time left, estimated")
    metrics: dict[str, Any] | None = Field(None, description="Test metrics, once succeeded")

    @classmethod
    def from_row(cls, run: Any) -> RunPublic:
        public = cls.model_validate(run)
        if public.status == RunStatus.RUNNING and public.progress is not None:
            public.eta_seconds = public.progress.eta_seconds
        return public


class RunsPublic(BaseModel):
    items: list[RunPublic]
    total: int
    limit: int
    offset: int


class EpochPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float | None
    seconds: float | None
    images_per_second: float | None
    recorded_at: datetime


class EpochsPublic(BaseModel):
    run_id: str
    items: list[EpochPublic]


# --- evaluations -----------------------------------------------------------------------------


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["train", "val", "test"] = Field(
        "test", description="Of the run's own data, split as training split it"
    )
    dataset: str | None = Field(
        None, description="Another registered dataset (name or id) with the same classes"
    )


class EvaluationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    split: str
    dataset: str | None
    status: EvaluationStatus
    accuracy: float | None
    precision_macro: float | None
    recall_macro: float | None
    f1_macro: float | None
    loss: float | None
    seconds: float | None
    images_per_second: float | None
    metrics: dict[str, Any] | None = Field(
        None, description="Everything: per-class metrics, the confusion matrix, …"
    )
    predictions_count: int | None = Field(
        None,
        description="Images whose predictions are stored (GET …/predictions); None: none kept",
    )
    attempts: int = Field(0, description="Claims by a worker (more than 1: a worker died)")
    worker_host: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class BatchPredictionCreate(BaseModel):
    """Predict every image of a split with a model version; kept as an evaluation."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(
        None,
        description="A registered dataset (name or id) with the model's classes; "
        "default: the data the model's run trained on",
    )
    split: Literal["train", "val", "test"] = Field("test", description="Which of its splits")


class EvaluationsPublic(BaseModel):
    run_id: str
    items: list[EvaluationPublic]


# --- datasets --------------------------------------------------------------------------------

DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LOOKS_LIKE_ID = re.compile(r"[0-9a-f]{32}")


def check_dataset_name(name: str) -> str:
    """Raise ValueError unless ``name`` is a usable dataset name."""
    if not DATASET_NAME.fullmatch(name):
        raise ValueError(
            "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if _LOOKS_LIKE_ID.fullmatch(name):
        raise ValueError("must not look like a dataset id (32 hex digits)")
    return name


class DatasetCreate(BaseModel):
    """Register data that already lies under the server's data root."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Unique; runs name the dataset by it")
    kind: str = Field(..., description=f"One of {', '.join(KINDS)}")
    path: str = Field(
        ...,
        description="Relative to the data root (for synthetic: N:HxWxC:K); nothing outside it",
        min_length=1,
        max_length=1024,
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dataset_name(v)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"Unknown data kind: {v!r}. Expected one of {', '.join(KINDS)}")
        return v


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str
    location: str = Field(..., description="Relative to the data root")
    source: str = Field(..., description="KIND:PATH, as a run's config names it")
    class_names: list[str]
    counts: dict[str, Any] = Field(
        ...,
        description="Per split: {size, counts: {class: images}, image_shape}",
        examples=[{"train": {"size": 5, "counts": {"cat": 3, "dog": 2}, "image_shape": None}}],
    )
    num_images: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> DatasetPublic:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            location=row.location,
            source=f"{row.kind}:{row.location}",
            class_names=list(row.class_names),
            counts=dict(row.counts or {}),
            num_images=row.num_images,
            created_at=row.created_at,
        )


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int


# --- architectures ---------------------------------------------------------------------------


class ArchitecturePublic(BaseModel):
    name: str
    family: str = Field(..., description="cifar or imagenet")
    kind: str = Field(..., description="resnet, plain, preact, wide or resnext")
    block: str
    depth: int
    input_shape: list[int]
    num_classes: int = Field(..., description="The head params and flops were counted with")
    params: int | None = Field(None, description="Trainable; null until the catalogue is built")
    flops: int | None = Field(None, description="Multiply-adds per image; null until built")
    paper_error: float | None = Field(None, description="%, as the paper reports it")
    paper_error_metric: str | None = None
    paper_top5_error: float | None = None


class ArchitecturesPublic(BaseModel):
    items: list[ArchitecturePublic]
    counted: bool = Field(
        ..., description="Whether params and flops are filled in (the catalogue cache is built)"
    )


# --- health ----------------------------------------------------------------------------------


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyPublic(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(..., description="Each dependency and 'ok'")
