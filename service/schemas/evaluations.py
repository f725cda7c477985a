"""Evaluations of a run's model on a split, and batch predictions (kept as evaluations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.records import EvaluationStatus


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["train", "val", "test"] | None = Field(
        None,
        description="Of the run's own data, split as training split it (default: test); an "
        "unlabelled dataset has no splits: leave it out",
    )
    dataset: str | None = Field(
        None,
        description="Another registered dataset (name or id) with the same classes, or "
        "unlabelled images (kind 'images'): predicted, not scored",
    )


class EvaluationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    split: str = Field(..., description="train, val or test; 'all' for unlabelled images")
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
        None,
        description="Everything: per-class metrics, the confusion matrix, …; none for "
        "unlabelled images (nothing to score: accuracy and the other scores stay null)",
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
        description="A registered dataset (name or id) with the model's classes, or "
        "unlabelled images (kind 'images': every file predicted, nothing scored); default: "
        "the data the model's run trained on",
    )
    split: Literal["train", "val", "test"] | None = Field(
        None,
        description="Which of its splits (default: test); an unlabelled dataset has none: "
        "leave it out",
    )


class EvaluationsPublic(BaseModel):
    run_id: str
    items: list[EvaluationPublic]
