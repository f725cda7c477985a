"""``/v1/experiments`` bodies: a grid or a random search of runs, and its cells and summary.

Hyperparameters are named by dotted path into the training config (``schedule.base_lr``), the
same override grammar as everywhere else (:func:`core.training.config.resolve_config`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from core.reports.experiments import MAX_CELLS
from jobs.records import RunStatus
from jobs.records.models import ExperimentKind


class RandomSearch(BaseModel):
    """``trials`` draws from ``space``; the same ``seed`` gives the same draws."""

    model_config = ConfigDict(extra="forbid")

    trials: StrictInt = Field(..., ge=1, le=MAX_CELLS)
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="Seeds the draws, not the runs")
    space: dict[str, dict[str, Any]] = Field(
        ...,
        min_length=1,
        description="Hyperparameter path → {low, high[, log][, integer]} or {choices: [...]}",
        examples=[
            {
                "schedule.base_lr": {"low": 0.01, "high": 0.3, "log": True},
                "optimizer.weight_decay": {"choices": [1e-4, 5e-4]},
            }
        ],
    )


class EarlyStopping(BaseModel):
    """An adaptive search: the cells become trials judged as they train, the losers stopped.

    ``asha``: asynchronous successive halving. Rungs at ``grace_period × reduction_factor**k``
    epochs below the budget (``base.epochs``), or the explicit ``rungs``; at each, a trial in
    the top ``1/reduction_factor`` so far goes on, one that can no longer get there is stopped
    early, the rest pause until enough trials have reported (then resume from their
    checkpoint). ``median``: from ``grace_period`` epochs on, a trial whose best value is worse
    than the median of the others' running means (at least ``min_trials`` of them) is stopped.
    At most ``max_concurrent`` trials train at once; the others wait ``paused``.
    """

    model_config = ConfigDict(extra="forbid")

    rule: Literal["asha", "median"]
    metric: Literal["val_accuracy", "val_loss", "accuracy", "loss"] = Field(
        "val_accuracy", description="Judged per epoch: accuracies maximised, losses minimised"
    )
    max_concurrent: StrictInt = Field(4, ge=1, le=MAX_CELLS, description="Trials at once")
    grace_period: StrictInt = Field(
        1, ge=1, description="Epochs before any trial is judged (ASHA: the first rung)"
    )
    reduction_factor: StrictInt | None = Field(
        None, description="ASHA only: η, the top 1/η of each rung go on (default 3)"
    )
    rungs: list[StrictInt] | None = Field(
        None, description="ASHA only: the epochs judged, instead of grace_period × η**k"
    )
    min_trials: StrictInt | None = Field(
        None, description="Median only: peers needed before a trial is stopped (default 3)"
    )


class ExperimentCreate(BaseModel):
    """Architectures × seeds × (a grid of hyperparameters | random-search trials).

    ``base`` holds the fields of ``POST /v1/runs`` every cell shares (``dataset`` or ``data``,
    ``preset``, ``epochs``, ``batch_size``, …). Hyperparameters are named by path: a config
    field (``epochs``, ``label_smoothing``) or ``section.field`` (``schedule.base_lr``,
    ``optimizer.weight_decay``). At most 200 cells.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128)
    architectures: list[str] = Field(
        ..., min_length=1, max_length=MAX_CELLS, examples=[["resnet20", "resnet32", "resnet44"]]
    )
    plain_twins: StrictBool = Field(
        False, description="Add each ResNet's plain twin (resnet20 → plain20), as in Figure 6"
    )
    seeds: list[StrictInt] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_CELLS)
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="POST /v1/runs fields every cell shares (not architecture or seed)",
        examples=[{"data": "cifar10", "preset": "cifar-paper"}],
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Hyperparameter path → the values to try; every combination is a cell",
        examples=[{"schedule.base_lr": [0.1, 0.05], "optimizer.weight_decay": [1e-4, 5e-4]}],
    )
    random: RandomSearch | None = Field(None, description="Instead of a grid")
    early_stopping: EarlyStopping | None = Field(
        None, description="Judge the cells as trials while they train and stop the losers"
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 0 <= s <= 2**31 - 1]
        if bad:
            raise ValueError(f"seeds must lie in [0, 2**31 - 1]; got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


class RungPublic(BaseModel):
    rung: int = Field(..., description="ASHA: the rung (0 first); median: the epoch")
    epoch: int
    value: float | None = Field(None, description="The rule's metric at that epoch")
    decision: str = Field(..., description="pending (paused there), promoted or stopped")
    reason: str | None = None


class CellPublic(BaseModel):
    run_id: str
    architecture: str
    seed: int
    params: dict[str, Any]
    status: RunStatus | None = Field(None, description="null: the run was deleted")
    epochs_completed: int | None = None
    epochs_planned: int | None = None
    accuracy: float | None = Field(None, description="Test accuracy, %")
    error: float | None = Field(None, description="Test error, %")
    f1: float | None = Field(None, description="Macro F1, %")
    training_time: float | None = Field(None, description="Seconds")
    rung: int | None = Field(
        None, description="Adaptive searches: the last rung the trial reported at (null: none)"
    )
    stopped_early: bool = Field(False, description="Stopped by the search's rule")
    stop_reason: str | None = Field(None, description="Why it was stopped, or why it ended")
    rungs: list[RungPublic] = Field(
        default_factory=list, description="Adaptive searches: each rung's report and decision"
    )


class ExperimentPublic(BaseModel):
    id: str
    name: str
    kind: ExperimentKind
    status: str = Field(..., description="queued, running, succeeded, failed or cancelled")
    counts: dict[str, int] = Field(..., description="Runs per status")
    created_at: datetime
    cancelled_at: datetime | None
    spec: dict[str, Any]
    cells: list[CellPublic]
    aggregate: list[dict[str, Any]] = Field(
        ..., description="Per architecture and hyperparameters: mean and _std over seeds"
    )
    owner_key_id: str | None = Field(
        None, description="The API key that made it, its owner (None: only admin keys change it)"
    )


class ExperimentSummary(BaseModel):
    id: str
    name: str
    kind: ExperimentKind
    status: str
    counts: dict[str, int]
    runs: int
    created_at: datetime
    cancelled_at: datetime | None


class ExperimentsPublic(BaseModel):
    items: list[ExperimentSummary]
    total: int
    limit: int
    offset: int
