"""Schemas of ``/v1/models``: promoting a run, a model's versions, and predictions' answers.

The predict routes build their JSON by hand (the hot path); :class:`PredictionsPublic` and
:class:`TFServingPublic` document what they send.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs.ids import MAX_VERSION, NAME_JSON_SCHEMA, NAME_RULE, RECORD_ID_RULE, is_name, is_record_id

VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]


class ModelPromote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(..., description="A succeeded run")
    name: str = Field(
        ..., description=f"The model's name: {NAME_RULE}", json_schema_extra=NAME_JSON_SCHEMA
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not is_name(v):
            raise ValueError(f"a model name is {NAME_RULE}")
        if is_record_id(v):
            raise ValueError(f"a model name must not look like a run id ({RECORD_ID_RULE})")
        return v


class ModelStatus(BaseModel):
    state: Literal["loaded", "loading", "not_loaded", "failed"] = Field(
        ..., description="In this API process"
    )
    queued: int | None = Field(None, description="Images waiting for the model")
    weight_bytes: int | None = None
    load_seconds: float | None = None
    engine: Literal["keras", "onnx", "savedmodel"] | None = Field(
        None, description="What runs the forward pass now (RESNET_PREDICT_ENGINE)"
    )
    engine_choice: dict[str, Any] | None = Field(
        None,
        description="With RESNET_PREDICT_ENGINE=auto: 'choosing' while the engines are exported "
        "and timed beside the model serving on Keras; then 'chosen' (the engine, milliseconds "
        "per call at batch 1 and the serving batch, engines skipped and why), 'failed' (the "
        "model stays on Keras) or 'skipped' (evicted, or its run deleted, meanwhile).",
    )
    error: str | None = Field(None, description="Why the last load failed")


class ModelVersionPublic(BaseModel):
    name: str | None = Field(..., description="None when the run is addressed by its id")
    version: int | None
    run_id: str
    architecture: str
    dataset: str
    classes: list[str] | None = Field(None, description="From the model's labels.json")
    multi_label: bool | None = None
    metrics: dict[str, Any] | None = Field(None, description="The run's test metrics")
    created_at: datetime = Field(..., description="When promoted (the run's end, for a run id)")
    status: ModelStatus
    owner_key_id: str | None = Field(
        None,
        description="The API key that promoted it (for a run id: made the run), its owner "
        "(None: only admin keys change it)",
    )


class ModelsPublic(BaseModel):
    items: list[ModelVersionPublic] = Field(..., description="The newest version of each model")


class ModelPublic(BaseModel):
    name: str
    latest_version: int | None
    versions: list[ModelVersionPublic] = Field(..., description="Newest first")


class LabelPublic(BaseModel):
    label: str
    index: int
    probability: float


class ImagePredictionPublic(BaseModel):
    name: str | None = Field(None, description="The file name or the name the image was sent with")
    labels: list[LabelPublic] = Field(..., description="Best first")


class PredictionModelPublic(BaseModel):
    name: str | None
    version: int | None
    run_id: str


class PredictionsPublic(BaseModel):
    model: PredictionModelPublic
    predictions: list[ImagePredictionPublic] = Field(..., description="One per image, in order")


class TFServingPublic(BaseModel):
    predictions: list[list[float]] = Field(..., description="Per instance: every probability")
