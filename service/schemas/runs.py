"""``/v1/runs`` bodies: what to train (``RunCreate``), and a run as the API shows it.

Two names for data are kept apart everywhere in the service:

- a **dataset reference** (``dataset`` in requests, ``dataset_ref`` in code): a registered
  dataset's name or id, see ``/v1/datasets``;
- a **data source** (``data`` in requests, ``source`` in code, ``TrainConfig.data``): the
  ``KIND:PATH`` a worker loads, e.g. ``synthetic:512:32x32x3:10`` or ``cifar10``.

A run's ``dataset`` in responses is the source it trained on (the HTTP name predates this
vocabulary) and ``dataset_id`` the registered dataset, if any.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.training.config import PRESETS, Hyperparameters, dotted_paths
from jobs.records import RunStatus
from service.schemas.strict import refuse_bools


class _WhatToTrain(BaseModel):
    architecture: str = Field(..., description="e.g. resnet20, resnet50, wrn28_10", min_length=1)
    dataset: str | None = Field(
        None, description="A dataset reference: a registered dataset's name or id."
    )
    data: str | None = Field(
        None,
        description="A data source without a path on the server: synthetic:N:HxWxC:K, cifar10, "
        "cifar100, mnist or fashion_mnist (e.g. synthetic:512:32x32x3:10)",
    )
    preset: str | None = Field(None, description=f"One of {', '.join(PRESETS)}")
    init_from: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="A weights file or .keras model to start from, relative to the data root "
        "(e.g. weights/resnet50-0676ba61.pth); the new head keeps the data's classes",
    )
    workers: int = Field(
        1,
        ge=1,
        strict=True,
        description="How many workers train the run together (data-parallel, one replica "
        "each; at most RESNET_MAX_WORKERS_PER_RUN). batch_size is the global batch and must "
        "split evenly over them; the run starts once that many workers have joined it.",
    )


# Bases in this order so the architecture and the data come first in the documented body.
class RunCreate(Hyperparameters, _WhatToTrain):
    """What to train: an architecture, the data, a preset, and any hyperparameters to override.

    Name the data with exactly one of ``dataset`` (a registered dataset's name or id) or
    ``data`` (a source without a path). Every other field overrides the preset, within the
    bounds shown (the defaults shown are those without a preset); fields of ``optimizer`` and
    ``schedule`` merge into the preset's. A top-level ``null`` leaves a field as the preset has
    it; inside ``optimizer`` or ``schedule`` a ``null`` is applied (``"schedule": {"boundaries":
    null, "boundary_epochs": [100, 150]}`` counts the preset's steps in epochs).
    ``init_from`` names a weights file under the data root to start from (fine-tuning): a
    torchvision state dict (``.safetensors`` or ``.pth``), a ``keras.applications`` weights file
    (``.h5`` or ``.weights.h5``) or a ``.keras`` model; it must fit the architecture, and its
    stride placement, padding and normalisation become the run's. ``freeze`` and
    ``backbone_lr_multiplier`` are the usual companions.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_no_override(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        refuse_bools(cls, values)
        return {
            k: v
            for k, v in values.items()
            if v is not None or k not in Hyperparameters.model_fields
        }

    def overrides(self) -> dict[str, Any]:
        """The hyperparameters this request sets, as dotted paths (``resolve_config``'s form)."""
        sent = self.model_dump(include=set(Hyperparameters.model_fields), exclude_unset=True)
        return dotted_paths(sent)


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


class SlotPublic(BaseModel):
    """One worker's place in a run across several workers (slot 0 is the chief)."""

    model_config = ConfigDict(from_attributes=True)

    slot: int
    worker_host: str | None = Field(None, description="The host its collective ops listen on")
    port: int | None = Field(None, description="Its collective-ops port (TCP, gRPC)")
    claimed_at: datetime | None = Field(None, description="None: free, waiting for a worker")
    heartbeat_at: datetime | None
    attempt: int = Field(..., description="How many times the slot was claimed")


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
    owner_key_id: str | None = Field(
        None, description="The API key that made it, its owner (None: only admin keys change it)"
    )
    workers: int = Field(1, description="How many workers train it together")
    slots: list[SlotPublic] = Field(
        default_factory=list,
        validation_alias="_slots_not_read",  # filled by from_row, for gang runs only
        description="Above one worker: each slot's worker, once one has claimed it",
    )
    distribution: dict[str, Any] | None = Field(
        None,
        description="Above one worker: global and per-replica batch, learning-rate scaling, "
        "data sharding, synchronised batch norm; the workers' addresses once an attempt starts",
    )

    @classmethod
    def from_row(cls, run: Any) -> RunPublic:
        public = cls.model_validate(run)
        public.owner_key_id = run.api_key_id
        if run.workers > 1:  # one-worker runs have no slots: spare a page of runs the reads
            public.slots = [SlotPublic.model_validate(slot) for slot in run.slots]
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
