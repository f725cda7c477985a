"""Record queries the API needs that :mod:`jobs.records.repository` does not have (yet).

Reads (datasets by id or name, pages of datasets, runs per status) and the two writes that mark
a job failed when the broker would not take its message. They follow the repository's rules —
plain functions over a session, the caller owns the transaction, state changes are single
conditional UPDATEs — and belong there; they are here only until it grows them.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.ids import is_record_id
from jobs.records import DatasetRecord, Evaluation, EvaluationStatus, RecordNotFound, Run, RunStatus
from jobs.records.models import utcnow


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
    return bool(
        session.scalar(
            select(func.count()).select_from(DatasetRecord).where(DatasetRecord.name == name)
        )
    )


def list_datasets(
    session: Session, *, limit: int = 50, offset: int = 0
) -> tuple[list[DatasetRecord], int]:
    """A page of datasets, newest first, and how many there are."""
    total = session.scalar(select(func.count()).select_from(DatasetRecord)) or 0
    rows = session.scalars(
        select(DatasetRecord)
        .order_by(DatasetRecord.created_at.desc(), DatasetRecord.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), int(total)


def count_runs_by_status(session: Session) -> dict[RunStatus, int]:
    rows = session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
    counts = dict.fromkeys(RunStatus, 0)
    for status, count in rows:
        counts[RunStatus(status)] = int(count)
    return counts


def fail_unqueued_run(session: Session, run_id: str, error: str) -> bool:
    """Mark a queued run failed because its task could not be sent.

    One conditional UPDATE from ``queued``: a run a worker somehow already claimed, or a client
    already cancelled, is left alone (``False``).
    """
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.FAILED, finished_at=utcnow(), error=error),
        execution_options={"synchronize_session": False},
    )
    return bool(getattr(result, "rowcount", 0))


def fail_unqueued_evaluation(session: Session, evaluation_id: str, error: str) -> bool:
    """Mark a queued evaluation failed because its task could not be sent (see above)."""
    result = session.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status == EvaluationStatus.QUEUED)
        .values(status=EvaluationStatus.FAILED, finished_at=utcnow(), error=error),
        execution_options={"synchronize_session": False},
    )
    return bool(getattr(result, "rowcount", 0))
