"""Evaluations: scoring a run's model on a split, and batch predictions (the same table).

Their job lifecycle is :data:`jobs.records.lifecycle.EVALUATION_JOBS`, the same as a run's
(:mod:`jobs.records.repository` lists its steps under the names callers know, such as
``claim_evaluation``). An evaluation cannot be
cancelled, and it starts over when it is reclaimed (it has no checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.records.lifecycle import EVALUATION_JOBS
from jobs.records.models import Evaluation, EvaluationStatus, Run
from jobs.records.sql import ensure_exists, float_or_none

# Headline columns and the metric keys they come from: single-label names first, then the
# multi-label ones (subset accuracy; CP/CR/CF1 are the per-class-averaged precision/recall/F1).
_EVALUATION_COLUMNS = {
    "accuracy": ("accuracy", "subset_accuracy"),
    "precision_macro": ("precision_macro", "CP"),
    "recall_macro": ("recall_macro", "CR"),
    "f1_macro": ("f1_macro", "CF1"),
    "loss": ("loss",),
    "seconds": ("seconds",),
    "images_per_second": ("images_per_second",),
}


def create_evaluation(
    session: Session,
    *,
    run_id: str,
    split: str,
    dataset: str | None = None,
    max_attempts: int = 3,
) -> Evaluation:
    """Add a queued evaluation of a run's model on a split.

    Args:
        session: The session; the evaluation is flushed (it has its id), not committed.
        run_id: The run whose model it scores.
        split: ``train``, ``val`` or ``test``.
        dataset: Another data source to score on; ``None``: the run's own data.
        max_attempts: How many times a worker may start it before a crash loop is given up
            on (as for runs).

    Raises:
        RecordNotFound: No such run.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    ensure_exists(session, Run, run_id)
    evaluation = Evaluation(
        run_id=run_id,
        split=split,
        dataset=dataset,
        status=EvaluationStatus.QUEUED,
        attempts=0,
        max_attempts=max_attempts,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def list_evaluations(session: Session, run_id: str) -> list[Evaluation]:
    """A run's evaluations, oldest first."""
    return list(
        session.scalars(
            select(Evaluation)
            .where(Evaluation.run_id == run_id)
            .order_by(Evaluation.created_at, Evaluation.id)
        )
    )


def finish_evaluation(
    session: Session,
    evaluation_id: str,
    *,
    status: EvaluationStatus | str,
    metrics: Mapping[str, Any] | None = None,
    error: str | None = None,
    predictions_uri: str | None = None,
    predictions_count: int | None = None,
    seconds: float | None = None,
    images_per_second: float | None = None,
    attempt: int | None = None,
) -> bool:
    """End a running evaluation (conditional UPDATE from ``running``, in ``attempt`` if given).

    Args:
        session: The session.
        evaluation_id: The evaluation.
        status: ``succeeded`` or ``failed``.
        metrics: What core's evaluation returned (JSON-ready), stored whole; its accuracy,
            macro precision/recall/F1, loss, seconds and images per second also fill the
            columns of the same names.
        error: What went wrong, for ``failed``.
        predictions_uri: Where the worker stored the predictions the metrics came from.
        predictions_count: How many images they cover.
        seconds: The pass's wall time, when there are no ``metrics`` to take it from (a
            batch prediction of unlabelled images is timed, not scored).
        images_per_second: Likewise.
        attempt: The attempt the caller holds: a worker whose evaluation was reclaimed and
            taken by another must not finish it.

    Returns:
        ``False`` if the evaluation was not running: nothing changed.

    Raises:
        ValueError: ``status`` is not ``succeeded`` or ``failed``.
        RecordNotFound: No such evaluation.
    """
    values: dict[str, Any] = {
        "error": error,
        "predictions_uri": predictions_uri,
        "predictions_count": predictions_count,
    }
    if seconds is not None or images_per_second is not None:
        values["seconds"] = float_or_none(seconds)
        values["images_per_second"] = float_or_none(images_per_second)
    if metrics is not None:
        values["metrics"] = dict(metrics)
        for column, keys in _EVALUATION_COLUMNS.items():
            found = next((metrics[k] for k in keys if metrics.get(k) is not None), None)
            values[column] = float_or_none(found)
    return EVALUATION_JOBS.finish(
        session, evaluation_id, status=status, attempt=attempt, values=values
    )
