"""``/v1/datasets`` bodies: register data under the data root; a dataset as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.data.types import DATASET_KINDS, UNLABELLED_KIND
from jobs.ids import NAME, NAME_JSON_SCHEMA, NAME_RULE, RECORD_ID_RULE, is_name, is_record_id
from service.data import source_of

DATASET_NAME = NAME


def check_dataset_name(name: str) -> str:
    """Raise ValueError unless ``name`` is a usable dataset name."""
    if not is_name(name):
        raise ValueError(f"must be {NAME_RULE}")
    if is_record_id(name):
        raise ValueError(f"must not look like a dataset id ({RECORD_ID_RULE})")
    return name


class DatasetCreate(BaseModel):
    """Register data that already lies under the server's data root."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ...,
        description=f"Unique; runs name the dataset by it: {NAME_RULE}",
        json_schema_extra=NAME_JSON_SCHEMA,
    )
    kind: str = Field(
        ...,
        description=f"One of {', '.join(DATASET_KINDS)}; {UNLABELLED_KIND!r}: a folder or "
        "archive of image files without class folders (sub-folders allowed), to predict",
        json_schema_extra={"enum": list(DATASET_KINDS)},
    )
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
        if v not in DATASET_KINDS:
            raise ValueError(
                f"Unknown data kind: {v!r}. Expected one of {', '.join(DATASET_KINDS)}"
            )
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
        description="Per split: {size, counts: {class: images}, image_shape}; unlabelled "
        "images: one split 'all' of the files named as images, no classes, and other_files "
        "(files not named as images, reported as such by its predictions)",
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
            source=source_of(row),
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
