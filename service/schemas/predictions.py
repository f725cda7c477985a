"""Schemas of an evaluation's stored predictions: a page of rows, and rescoring them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat


class PredictionScore(BaseModel):
    label: str
    score: float


class PredictionRow(BaseModel):
    index: int = Field(..., description="Position in the split")
    id: str = Field(..., description="The image's file under the data root, or split/index")
    label: str | list[str] = Field(..., description="The true label (multi-label: all of them)")
    predictions: list[PredictionScore] = Field(
        ..., description="Top-k labels (multi-label: every label at or over the threshold)"
    )


class PredictionsPage(BaseModel):
    evaluation_id: str
    run_id: str
    count: int = Field(..., description="Images in the split")
    class_names: list[str]
    multi_label: bool
    offset: int
    limit: int
    items: list[PredictionRow]


class Rescore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: StrictFloat = Field(
        0.5, ge=0.0, le=1.0, description="Multi-label decision threshold"
    )


class RescorePublic(BaseModel):
    evaluation_id: str
    threshold: float
    metrics: dict[str, Any]
