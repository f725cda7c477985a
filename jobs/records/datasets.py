"""Registered datasets: where each lives and what is in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs.ids import is_record_id
from jobs.records.errors import RecordConflict, RecordNotFound
from jobs.records.models import (
    ACTIVE_RUN_STATUSES,
    DatasetRecord,
    Evaluation,
    EvaluationStatus,
    Run,
)
from jobs.records.sql import newest_first


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
    """Add a dataset. A name is registered once: never replaced, since runs may point to it.

    The insert is flushed at once inside a savepoint, so the unique index on the name decides
    between concurrent registrations: the loser gets a :class:`RecordConflict`, not a 500.

    Raises:
        RecordConflict: a dataset of this name exists (or was registered at the same moment).
    """
    if dataset_name_taken(session, name):
        raise RecordConflict(f"A dataset named {name!r} is already registered")
    dataset = DatasetRecord(
        name=name,
        kind=kind,
        location=location,
        class_names=list(class_names),
        counts=dict(counts or {}),
        num_images=num_images,
    )
    try:
        with session.begin_nested():
            session.add(dataset)
    except IntegrityError:
        raise RecordConflict(f"A dataset named {name!r} is already registered") from None
    return dataset


def jobs_using_dataset(session: Session, dataset: DatasetRecord) -> list[str]:
    """Queued, running (or paused: trials of a search) runs and queued or running evaluations
    that read ``dataset``: ``["run <id>", ...]``."""
    source = f"{dataset.kind}:{dataset.location}"
    runs = session.scalars(
        select(Run.id).where(
            Run.status.in_(ACTIVE_RUN_STATUSES),
            or_(Run.dataset_id == dataset.id, Run.dataset == source),
        )
    ).all()
    evaluations = session.scalars(
        select(Evaluation.id)
        .join(Run, Evaluation.run_id == Run.id)
        .where(
            Evaluation.status.in_((EvaluationStatus.QUEUED, EvaluationStatus.RUNNING)),
            or_(
                Evaluation.dataset == source,
                and_(
                    Evaluation.dataset.is_(None),
                    or_(Run.dataset_id == dataset.id, Run.dataset == source),
                ),
            ),
        )
    ).all()
    return [f"run {r}" for r in runs] + [f"evaluation {e}" for e in evaluations]


def delete_dataset(session: Session, dataset: DatasetRecord) -> None:
    """Delete the record, unless a queued or running job reads it.

    Raises:
        RecordConflict: naming the jobs that use it.
    """
    users = jobs_using_dataset(session, dataset)
    if users:
        shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
        raise RecordConflict(
            f"Dataset {dataset.name!r} is used by {shown}; cancel them or wait until they end"
        )
    session.delete(dataset)
    session.flush()


def datasets_at(session: Session, prefix: str) -> list[DatasetRecord]:
    """Datasets whose location is ``prefix`` or lies under it."""
    return list(
        session.scalars(
            select(DatasetRecord).where(
                or_(
                    DatasetRecord.location == prefix,
                    DatasetRecord.location.startswith(prefix + "/", autoescape=True),
                )
            )
        ).all()
    )


def find_dataset(session: Session, ref: str) -> DatasetRecord:
    """The dataset whose id or name is ``ref``.

    Raises:
        RecordNotFound: Neither an id nor a name of a registered dataset.
    """
    dataset = session.get(DatasetRecord, ref) if is_record_id(ref) else None
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
