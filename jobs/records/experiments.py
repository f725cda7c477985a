"""Experiments: sets of runs made together (a grid, or a random search), one run per cell."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs.records.errors import RecordConflict, RecordNotFound
from jobs.records.models import (
    ACTIVE_RUN_STATUSES,
    Experiment,
    ExperimentKind,
    Run,
    RunStatus,
    utcnow,
)
from jobs.records.runs import request_cancel
from jobs.records.sql import changed, get_row, newest_first


def create_experiment(
    session: Session,
    *,
    name: str,
    kind: ExperimentKind | str,
    spec: Mapping[str, Any],
    api_key_id: str | None = None,
) -> Experiment:
    """Add an experiment with no cells yet; add its runs with :func:`attach_to_experiment`.

    Args:
        session: The session; the experiment is flushed (it has its id), not committed.
        name: For people.
        kind: ``grid`` or ``random``.
        spec: The validated request, JSON-ready.
        api_key_id: The key that asked for it.
    """
    experiment = Experiment(
        name=name, kind=ExperimentKind(kind), spec=dict(spec), cells=[], api_key_id=api_key_id
    )
    session.add(experiment)
    session.flush()
    return experiment


def attach_to_experiment(
    session: Session, experiment: Experiment, run: Run, *, cell: Mapping[str, Any]
) -> None:
    """Make ``run`` a cell of ``experiment``; ``cell`` says what it varies (seed, params)."""
    run.experiment_id = experiment.id
    experiment.cells = [*experiment.cells, {**cell, "run_id": run.id}]
    session.flush()


def get_experiment(session: Session, experiment_id: str) -> Experiment:
    """The experiment with this id.

    Raises:
        RecordNotFound: No such experiment.
    """
    return get_row(session, Experiment, experiment_id)


def list_experiments(
    session: Session, *, limit: int = 50, offset: int = 0
) -> tuple[list[Experiment], int]:
    """A page of experiments, newest first, and how many there are."""
    return newest_first(session, Experiment, limit=limit, offset=offset)


def list_experiment_runs(session: Session, experiment_id: str) -> list[Run]:
    """The experiment's runs, oldest first (deleted runs are simply absent)."""
    return list(
        session.scalars(
            select(Run).where(Run.experiment_id == experiment_id).order_by(Run.created_at, Run.id)
        )
    )


def cancel_experiment(session: Session, experiment_id: str) -> tuple[Experiment, list[str]]:
    """Cancel every run of the experiment that has not finished; note when it was cancelled.

    Queued and paused runs are cancelled at once, running ones asked to stop
    (:func:`request_cancel`); finished ones are left as they are. Cancelling again changes nothing.

    Returns:
        The experiment and the ids of the runs this call cancelled or asked to stop.

    Raises:
        RecordNotFound: No such experiment.
    """
    changed(
        session,
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.cancelled_at.is_(None))
        .values(cancelled_at=utcnow()),
    )
    experiment = get_row(session, Experiment, experiment_id)
    pending = session.scalars(
        select(Run.id).where(
            Run.experiment_id == experiment_id,
            Run.status.in_(ACTIVE_RUN_STATUSES),
            Run.cancel_requested.is_(False),
        )
    ).all()
    cancelled = []
    for run_id in pending:
        try:
            request_cancel(session, run_id)
        except (RecordConflict, RecordNotFound):  # it finished or was deleted meanwhile
            continue
        cancelled.append(run_id)
    return experiment, cancelled


def finished_runs_like(
    session: Session,
    *,
    architecture: str,
    dataset: str,
    exclude: str | None = None,
    limit: int = 20,
) -> list[Run]:
    """The newest succeeded runs of an architecture on a dataset (candidate twins of a run)."""
    query = select(Run).where(
        Run.architecture == architecture,
        Run.dataset == dataset,
        Run.status == RunStatus.SUCCEEDED,
    )
    if exclude is not None:
        query = query.where(Run.id != exclude)
    return list(session.scalars(query.order_by(Run.finished_at.desc(), Run.id).limit(limit)))
