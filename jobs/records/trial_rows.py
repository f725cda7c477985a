"""The rows of adaptive searches (:mod:`jobs.records.trials`), read and written without a decision:
each trial's rung rows, the values they compare, why a trial stopped, and which searches wait.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.early_stopping import Verdict
from jobs.records.models import EpochMetric, Experiment, Run, RunStatus, TrialRung, utcnow


def stop_reason(session: Session, run_id: str) -> str | None:
    """Why a trial was stopped early (``"stopped early at rung 1 (epoch 3): ..."``), if it was."""
    row = session.scalars(
        select(TrialRung)
        .where(TrialRung.run_id == run_id, TrialRung.decision == Verdict.STOPPED)
        .order_by(TrialRung.rung.desc())
    ).first()
    return None if row is None else stopped_words(row)


def unfinished_searches(session: Session) -> list[str]:
    """The ids of experiments with paused trials (what the sweeper advances)."""
    return list(
        session.scalars(
            select(Run.experiment_id)
            .where(Run.status == RunStatus.PAUSED, Run.experiment_id.is_not(None))
            .distinct()
        )
    )


def stopped_early_ids(session: Session, experiment_id: str) -> set[str]:
    """The experiment's runs its rule stopped early."""
    return set(
        session.scalars(
            select(TrialRung.run_id).where(
                TrialRung.experiment_id == experiment_id, TrialRung.decision == Verdict.STOPPED
            )
        )
    )


def trial_rungs(session: Session, experiment_id: str) -> dict[str, list[TrialRung]]:
    """Each trial's rung rows, in rung order, by run id."""
    rows = session.scalars(
        select(TrialRung)
        .where(TrialRung.experiment_id == experiment_id)
        .order_by(TrialRung.run_id, TrialRung.rung)
    )
    out: dict[str, list[TrialRung]] = {}
    for row in rows:
        out.setdefault(row.run_id, []).append(row)
    return out


def alive(run: Run, rows: Sequence[TrialRung]) -> bool:
    """Whether a trial may still train: not finished, not cancelled, not stopped early (its
    row's decision is read from the session, where this decision round may just have set it).
    """
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED):
        return False
    return not run.cancel_requested and not any(r.decision == Verdict.STOPPED for r in rows)


def add_row(
    session: Session, experiment: Experiment, run: Run, *, rung: int, epoch: int, value: Any
) -> TrialRung:
    row = TrialRung(
        experiment_id=experiment.id,
        run_id=run.id,
        rung=rung,
        epoch=epoch,
        value=None if value is None else float(value),
        decision=Verdict.PENDING.value,
        reported_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def metric_value(values: Mapping[str, Any], metric: str) -> float | None:
    value = values.get(metric)
    return None if value is None else float(value)


def epoch_value(session: Session, run_id: str, epoch: int, metric: str) -> float | None:
    value = session.scalar(
        select(getattr(EpochMetric, metric)).where(
            EpochMetric.run_id == run_id, EpochMetric.epoch == epoch
        )
    )
    return None if value is None else float(value)


def score(value: float | None, higher: bool) -> float:
    """A value to rank by: a missing or NaN one (a diverged trial) ranks last."""
    if value is None or math.isnan(value):
        return float("-inf") if higher else float("inf")
    return value


def stopped_words(row: TrialRung) -> str:
    # ASHA's rung k sits at epoch grace × η**k > k; the median rule's rows are per epoch.
    where = (
        f"epoch {row.epoch}" if row.rung == row.epoch else f"rung {row.rung} (epoch {row.epoch})"
    )
    return f"stopped early at {where}: {row.reason}"
