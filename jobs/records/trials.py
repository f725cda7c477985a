"""Adaptive searches: the trials of an experiment with an early-stopping rule, and its decisions.

An experiment whose spec has ``early_stopping`` (``{"rule": "asha" | "median", ...}``) runs its
cells as *trials*. Its runs are recorded together; at most ``max_concurrent`` of them are
``queued`` or ``running`` at a time, the others wait ``paused``. A trial's worker reports every
epoch (:func:`report_epoch`); the rule's verdict (:mod:`core.early_stopping`) says whether it
goes on, stops early, or (ASHA, at a rung) pauses until enough trials have reported there.

- **Stopped early** goes through the same cancel as a user's (:func:`request_cancel`): a paused
  trial is cancelled at once, a running one is asked to stop and its worker finishes it as
  ``cancelled``. The run's ``error`` and its rung row say at which rung and why.
- **Promoted**: a trial already running goes straight on; a paused one is queued again when a
  slot frees (promotions first, the highest rung first, then trials not started yet), and its
  worker resumes it from its checkpoint, as after a crash.

Every decision is made under the experiment's lock (:func:`_lock_experiment`, a row write
that PostgreSQL holds until commit and that takes SQLite's one write lock), in the caller's
transaction: two trials reporting at the same rung at the same moment are judged one after
the other, each seeing the other's report, and the slot count cannot be overrun. Whatever
writes a trial's run here takes that lock before the run's row (the one order: no deadlock
with a decision that stops or queues the run). A worker that
dies mid-trial leaves its run ``running``; the sweeper requeues it as any run, its resumed
attempt reports the rungs it missed, and a rung already decided is not decided again (one row
per trial and rung). The sweeper also calls :func:`advance` for every unfinished search, so a
search whose last active trial failed or was cancelled still stops its losers and goes on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.early_stopping import (
    Decision,
    Report,
    Verdict,
    asha_decide,
    higher_is_better,
    median_decide,
)
from jobs.records.errors import RecordConflict, RecordNotFound
from jobs.records.models import (
    EpochMetric,
    Experiment,
    Run,
    RunStatus,
    TrialRung,
    utcnow,
)
from jobs.records.runs import request_cancel
from jobs.records.sql import changed
from jobs.records.trial_rows import (
    add_row,
    alive,
    epoch_value,
    metric_value,
    score,
    stop_reason,
    stopped_early_ids,
    stopped_words,
    trial_rungs,
    unfinished_searches,
)

__all__ = [
    "ASHA", "MEDIAN", "Next", "Outcome", "Rule", "advance", "hold_back", "pause",
    "report_epoch", "standing", "stop_reason", "stopped_early_ids", "trial_rungs",
    "unfinished_searches",
]  # fmt: skip

ASHA = "asha"
MEDIAN = "median"


class Next(enum.StrEnum):
    """What a trial's worker does after reporting an epoch."""

    CONTINUE = "continue"  # train on
    PAUSE = "pause"  # stop training, leave the checkpoint, and mark the run paused
    STOP = "stop"  # stopped early: a cancel is pending, finish the run as cancelled


@dataclass(frozen=True)
class Rule:
    """An experiment's early-stopping rule, as its spec stores it (validated at the door)."""

    name: str  # "asha" | "median"
    metric: str
    max_concurrent: int
    rungs: tuple[int, ...] = ()  # ASHA: the epochs judged
    reduction_factor: int = 3  # ASHA
    grace_period: int = 1
    min_trials: int = 3  # median

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Rule | None:
        """The rule in an experiment's spec, or ``None`` for a plain grid or random search."""
        block = spec.get("early_stopping")
        if not block:
            return None
        return cls(
            name=str(block["rule"]),
            metric=str(block.get("metric", "val_accuracy")),
            max_concurrent=int(block["max_concurrent"]),
            rungs=tuple(int(r) for r in block.get("rungs") or ()),
            reduction_factor=int(block.get("reduction_factor") or 3),
            grace_period=int(block.get("grace_period") or 1),
            min_trials=int(block.get("min_trials") or 3),
        )


@dataclass(frozen=True)
class Outcome:
    """A report's result: what the reporting trial does, and which runs to send (after commit)."""

    next: Next
    send: list[str]
    reason: str | None = None


# --- the door: a new search's runs ---------------------------------------------------------


def hold_back(session: Session, run_ids: Sequence[str], *, max_concurrent: int) -> list[str]:
    """Mark all but the first ``max_concurrent`` of a new search's queued runs ``paused``.

    Returns:
        The ids left ``queued``: the ones to send once the transaction commits.
    """
    waiting = list(run_ids[max_concurrent:])
    if waiting:
        session.execute(
            update(Run)
            .where(Run.id.in_(waiting), Run.status == RunStatus.QUEUED)
            .values(status=RunStatus.PAUSED)
        )
    return list(run_ids[:max_concurrent])


# --- the worker's reports ------------------------------------------------------------------


def report_epoch(
    session: Session, run_id: str, *, epoch: int, values: Mapping[str, Any]
) -> Outcome:
    """A trial finished ``epoch`` (recorded already); judge it and return what it does next.

    Args:
        session: The session; the caller commits, then sends :attr:`Outcome.send`.
        run_id: The trial's run.
        epoch: The epoch just finished (1-based).
        values: The epoch's metrics (``EpochRecord.to_dict()``).

    Raises:
        RecordNotFound: No such run.
    """
    run = session.get(Run, run_id)
    if run is None:
        raise RecordNotFound("Run", run_id)
    if run.experiment_id is None:
        return Outcome(Next.CONTINUE, [])
    experiment = _lock_experiment(session, run.experiment_id)
    rule = Rule.of(experiment.spec)
    if rule is None:
        return Outcome(Next.CONTINUE, [])
    if rule.name == ASHA:
        return _report_asha(session, experiment, rule, run, epoch=epoch, values=values)
    return _report_median(session, experiment, rule, run, epoch=epoch, values=values)


def pause(session: Session, run_id: str, *, attempt: int | None) -> bool:
    """Its worker stopped a trial at a rung: ``running`` (in ``attempt``) → ``paused``.

    The experiment's lock is taken first, as by every decision: a decision holding it may
    write this run (stop it, queue it), and taking the two in the other order could deadlock.

    Returns:
        ``False`` if the run was no longer running in that attempt (nothing changed).
    """
    experiment_id = session.scalar(select(Run.experiment_id).where(Run.id == run_id))
    if experiment_id is not None:
        _lock_experiment(session, experiment_id)
    clauses = [Run.id == run_id, Run.status == RunStatus.RUNNING]
    if attempt is not None:
        clauses.append(Run.attempts == attempt)
    return bool(
        changed(
            session,
            update(Run)
            .where(*clauses, Run.cancel_requested.is_(False))
            .values(status=RunStatus.PAUSED, progress=None, heartbeat_at=None),
        )
    )


def standing(session: Session, run_id: str) -> Next:
    """What a trial's new attempt does before training: a trial whose worker died after its
    rung's report, before it paused, is still waiting at that rung (``PAUSE``)."""
    latest = session.scalars(
        select(TrialRung).where(TrialRung.run_id == run_id).order_by(TrialRung.rung.desc())
    ).first()
    if latest is None or latest.decision == Verdict.PROMOTED:
        return Next.CONTINUE
    return Next.STOP if latest.decision == Verdict.STOPPED else Next.PAUSE


# --- decisions -----------------------------------------------------------------------------


def advance(session: Session, experiment_id: str) -> list[str]:
    """Apply the search's pending decisions and fill its free slots.

    Stops the paused trials that can no longer make a cut, promotes those that made it, and
    queues paused trials while fewer than ``max_concurrent`` are queued or running: promoted
    ones first (highest rung, then best value), then trials not started yet, in cell order.

    Returns:
        The ids of the runs queued: send their tasks once the transaction commits.
    """
    experiment = _lock_experiment(session, experiment_id)
    rule = Rule.of(experiment.spec)
    if rule is None:
        return []
    if rule.name == ASHA:
        _decide_asha(session, experiment, rule)
    return _fill_slots(session, experiment, rule)


# --- ASHA ----------------------------------------------------------------------------------


def _report_asha(
    session: Session,
    experiment: Experiment,
    rule: Rule,
    run: Run,
    *,
    epoch: int,
    values: Mapping[str, Any],
) -> Outcome:
    rows = {r.rung: r for r in trial_rungs(session, experiment.id).get(run.id, [])}
    value = metric_value(values, rule.metric)
    # Every rung up to this epoch that has no report yet: normally just this epoch's; after a
    # crash between a rung's checkpoint and its report, the resumed attempt reports it late.
    for rung, rung_epoch in enumerate(rule.rungs):
        if rung_epoch <= epoch and rung not in rows:
            late = epoch_value(session, run.id, rung_epoch, rule.metric)
            rows[rung] = add_row(
                session, experiment, run, rung=rung, epoch=rung_epoch,
                value=late if late is not None else value,
            )  # fmt: skip
    latest = max((r for r in rows.values() if r.epoch <= epoch), key=lambda r: r.rung, default=None)
    if latest is None:
        return Outcome(Next.CONTINUE, [])  # before its first rung
    # Between rungs this is normally "promoted, go on"; a trial that trained past a rung it
    # is still pending at (its worker missed the verdict) is paused here, a stopped one stops.
    _decide_asha(session, experiment, rule)
    session.refresh(latest)
    send = _fill_slots(session, experiment, rule)
    if latest.decision == Verdict.STOPPED:
        return Outcome(Next.STOP, send, stopped_words(latest))
    if latest.decision == Verdict.PROMOTED:
        return Outcome(Next.CONTINUE, send, latest.reason)
    return Outcome(Next.PAUSE, send, latest.reason)


def _decide_asha(session: Session, experiment: Experiment, rule: Rule) -> None:
    runs = _runs(session, experiment.id)
    by_run = trial_rungs(session, experiment.id)
    higher = higher_is_better(rule.metric)
    for rung in range(len(rule.rungs)):
        rows = sorted(
            (r for rows in by_run.values() for r in rows if r.rung == rung),
            key=lambda r: (r.reported_at, r.id),
        )
        if not rows:
            continue
        # Live trials that have not reached this rung may still report there.
        still = sum(
            1
            for run in runs
            if alive(run, by_run.get(run.id, []))
            and max((r.rung for r in by_run.get(run.id, [])), default=-1) < rung
        )
        decisions = asha_decide(
            [Report(r.run_id, score(r.value, higher)) for r in rows],
            reduction_factor=rule.reduction_factor,
            still_to_report=still,
            higher_better=higher,
        )
        for row in rows:
            if row.decision == Verdict.PENDING:
                _apply(session, row, decisions[row.run_id])


def _apply(session: Session, row: TrialRung, decision: Decision) -> None:
    if decision.verdict == Verdict.PENDING:
        if row.reason != decision.reason:  # "waiting for N more": the count moves
            row.reason = decision.reason
            session.flush()
        return
    row.decision = decision.verdict.value
    row.reason = decision.reason
    row.decided_at = utcnow()
    session.flush()
    if decision.verdict == Verdict.STOPPED:
        _stop(session, row.run_id, stopped_words(row))


def _stop(session: Session, run_id: str, why: str) -> None:
    """Stop a trial early through the user's cancel path; a paused one ends at once."""
    try:
        request_cancel(session, run_id)
    except (RecordConflict, RecordNotFound):  # it finished (or was deleted) meanwhile
        return
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.CANCELLED, Run.error.is_(None))
        .values(error=why)
    )


# --- median stopping -----------------------------------------------------------------------


def _report_median(
    session: Session,
    experiment: Experiment,
    rule: Rule,
    run: Run,
    *,
    epoch: int,
    values: Mapping[str, Any],
) -> Outcome:
    if epoch < rule.grace_period:
        return Outcome(Next.CONTINUE, [])
    existing = session.scalars(
        select(TrialRung).where(TrialRung.run_id == run.id, TrialRung.rung == epoch)
    ).first()
    if existing is None:  # not judged yet (a resumed attempt may report an epoch again)
        series = _series(session, experiment.id, rule.metric, upto=epoch)
        mine = series.pop(run.id, [])
        higher = higher_is_better(rule.metric)
        if len(mine) < epoch:  # a gap in its own rows: judge by what is there and this epoch
            mine = [*mine, score(metric_value(values, rule.metric), higher)]
        decision = median_decide(
            mine,
            list(series.values()),
            grace_period=rule.grace_period,
            min_trials=rule.min_trials,
            higher_better=higher,
        )
        existing = add_row(session, experiment, run, rung=epoch, epoch=epoch, value=mine[-1])
        _apply(session, existing, decision)
    send = _fill_slots(session, experiment, rule)
    if existing.decision == Verdict.STOPPED:
        return Outcome(Next.STOP, send, stopped_words(existing))
    return Outcome(Next.CONTINUE, send, existing.reason)


def _series(
    session: Session, experiment_id: str, metric: str, *, upto: int
) -> dict[str, list[float]]:
    """Each trial's metric per epoch, epochs 1..``upto`` (a trial's list stops at its first gap)."""
    column = getattr(EpochMetric, metric)
    rows = session.execute(
        select(EpochMetric.run_id, EpochMetric.epoch, column)
        .join(Run, Run.id == EpochMetric.run_id)
        .where(Run.experiment_id == experiment_id, EpochMetric.epoch <= upto)
        .order_by(EpochMetric.run_id, EpochMetric.epoch)
    ).all()
    out: dict[str, list[float]] = {}
    for run_id, epoch, value in rows:
        series = out.setdefault(run_id, [])
        if epoch == len(series) + 1 and value is not None:
            series.append(float(value))
    return out


# --- shared --------------------------------------------------------------------------------


def _fill_slots(session: Session, experiment: Experiment, rule: Rule) -> list[str]:
    if experiment.cancelled_at is not None:
        return []
    runs = _runs(session, experiment.id)
    busy = sum(
        1
        for r in runs
        if r.status in (RunStatus.QUEUED, RunStatus.RUNNING) and not r.cancel_requested
    )
    free = rule.max_concurrent - busy
    if free <= 0:
        return []
    by_run = trial_rungs(session, experiment.id)
    higher = higher_is_better(rule.metric)
    promoted, fresh = [], []
    for order, run in enumerate(runs):
        if run.status != RunStatus.PAUSED or run.cancel_requested:
            continue
        rows = by_run.get(run.id, [])
        if not rows:
            fresh.append((order, run.id))
        elif rows[-1].decision == Verdict.PROMOTED:
            value = score(rows[-1].value, higher)
            promoted.append((-rows[-1].rung, -value if higher else value, order, run.id))
    resumed = [p[-1] for p in sorted(promoted)]
    queue = resumed + [f[-1] for f in sorted(fresh)]
    sent = []
    for run_id in queue[:free]:
        # A pause took one of the run's attempts without a crash: give it back, so a promoted
        # trial keeps the whole crash allowance (max_attempts counts claims) for each segment.
        extra = 1 if run_id in resumed else 0
        if changed(
            session,
            update(Run)
            .where(
                Run.id == run_id, Run.status == RunStatus.PAUSED, Run.cancel_requested.is_(False)
            )
            .values(status=RunStatus.QUEUED, max_attempts=Run.max_attempts + extra),
        ):
            sent.append(run_id)
    return sent


def _lock_experiment(session: Session, experiment_id: str) -> Experiment:
    """Take the experiment's lock for the rest of the transaction, and return it.

    A write to its row: PostgreSQL holds the row lock until commit, and on SQLite the first
    write takes the database's write lock (WAL readers never upgrade mid-transaction, so the
    lock must come before the reads a decision rests on).
    """
    if not changed(
        session,
        update(Experiment).where(Experiment.id == experiment_id).values(name=Experiment.name),
    ):
        raise RecordNotFound("Experiment", experiment_id)
    experiment = session.get(Experiment, experiment_id)
    assert experiment is not None
    session.refresh(experiment)
    return experiment


def _runs(session: Session, experiment_id: str) -> list[Run]:
    """The experiment's runs in cell order, read afresh."""
    experiment = session.get(Experiment, experiment_id)
    assert experiment is not None
    order = {cell["run_id"]: i for i, cell in enumerate(experiment.cells)}
    runs = list(
        session.scalars(
            select(Run)
            .where(Run.experiment_id == experiment_id)
            .execution_options(populate_existing=True)
        )
    )
    return sorted(runs, key=lambda r: order.get(r.id, len(order)))
