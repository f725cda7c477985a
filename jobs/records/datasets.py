"""Registered datasets: where each lives and what is in it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.records.errors import RecordNotFound
from jobs.records.models import DatasetRecord
from jobs.records.sql import newest_first

_ID = re.compile(r"[0-9a-f]{32}")


def register_dataset(
    session: Session,
    *,
    name: str,
    kind: str,
    location: str,
    class_names: Sequence[str] = (),
    counts: Mapping[str, Any] | None = None,
    num_images: int = 0,
) -> DatasetRecord:
    """Add a dataset, or update the one of the same name."""
    dataset = session.scalars(select(DatasetRecord).where(DatasetRecord.name == name)).one_or_none()
    if dataset is None:
        dataset = DatasetRecord(name=name)
        session.add(dataset)
    dataset.kind = kind
    dataset.location = location
    dataset.class_names = list(class_names)
    dataset.counts = dict(counts or {})
    dataset.num_images = num_images
    session.flush()
    return dataset


def find_dataset(session: Session, ref: str) -> DatasetRecord:
    """The dataset whose id or name is ``ref``.

    Raises:
        RecordNotFound: Neither an id nor a name of a registered dataset.
    """
    dataset = session.get(DatasetRecord, ref) if _ID.fullmatch(ref) else None
    if dataset is None:
        dataset = session.scalars(
            select(DatasetRecord).where(DatasetRecord.name == ref)
        ).one_or_none()
    if dataset is None:
        raise RecordNotFound("Dataset", ref)
    return dataset


def dataset_name_taken(session: Session, name: str) -> bool:
    """Whether a registered dataset already has this name."""
    return bool(
        session.scalar(
            select(func.count()).select_from(DatasetRecord).where(DatasetRecord.name == name)
        )
    )


def list_datasets(
    session: Session, *, limit: int = 50, offset: int = 0
) -> tuple[list[DatasetRecord], int]:
    """A page of datasets, newest first, and how many there are."""
    return newest_first(session, DatasetRecord, limit=limit, offset=offset)
