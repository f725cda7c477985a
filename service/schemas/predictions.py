"""Schemas of an evaluation's stored predictions: a page of rows, and rescoring them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat


class PredictionScore(BaseModel):
    label: str
    score: float


class PredictionRow(BaseModel):
    """A row as it is sent: unlabelled images' rows have no ``label`` key (there is no true
    label) and always an ``error`` key; labelled rows have a ``label`` and no ``error``."""

    index: int = Field(..., description="Position in the split")
    id: str = Field(
        ...,
        description="The image's file under the data root, or split/index; for unlabelled "
        "images, the file's path relative to the dataset's folder",
    )
    label: str | list[str] | None = Field(
        None,
        description="The true label (multi-label: all of them); absent for unlabelled images",
    )
    predictions: list[PredictionScore] = Field(
        ...,
        description="Top-k labels (multi-label: every label at or over the threshold); empty "
        "when the file could not be read",
    )
    error: str | None = Field(
        None,
        description="Unlabelled images only: why the file gave no predictions (not an image, "
        "corrupt, too large); null when it was read",
    )


class PredictionsPage(BaseModel):
    evaluation_id: str
    run_id: str
    count: int = Field(..., description="Images in the split (unlabelled: files in the folder)")
    class_names: list[str]
    multi_label: bool
    labelled: bool = Field(
        ..., description="False for unlabelled images: rows have no label, nothing is scored"
    )
    unreadable: int | None = Field(
        None, description="Unlabelled images only: files that gave no predictions"
    )
    offset: int
    limit: int
    next_offset: int | None = Field(
        None, description="The offset of the next page; null on the last page"
    )
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
