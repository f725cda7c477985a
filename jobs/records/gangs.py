"""The job lifecycle of a run trained by several workers at once (a *gang*, issue 13).

A one-worker run is claimed by its worker (:data:`jobs.records.lifecycle.RUN_JOBS`). A run with
``workers`` N > 1 is first met in its N slots (:mod:`jobs.records.slots`); then its chief (the
worker of slot 0) claims the run for the whole gang::

    queued ──N slots claimed──▶ start_gang ──▶ running ──(the chief)──▶ succeeded | cancelled
      ▲                                           │
      └──────────────── requeue_gang ◀────────────┘  any slot lost, stale or failed;
                        (or failed: out of attempts; cancelled: a cancel was pending)

Every claim of the run counts one attempt, as for one-worker runs; every write of the gang is
fenced by it. :func:`requeue_gang` puts the run back to ``queued`` and frees all its slots in
one transaction, so that the next N workers to come meet in free slots; the caller then sends
the run's N task messages. What is broken is decided from the records alone (slots free or
claimed again, heartbeats too old), so that any survivor of a gang, or any worker's sweeper,
decides the same.

Plain functions over a :class:`~sqlalchemy.orm.Session`: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import String, and_, literal, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from jobs.records.lifecycle import RUN_JOBS, ReclaimOutcome
from jobs.records.models import Run, RunSlot, RunStatus, utcnow
from jobs.records.slots import SlotClaim, release_slot, release_slots
from jobs.records.sql import changed, get_row


@dataclass(frozen=True)
class Gang:
    """The workers that met for one attempt of a run: each slot's claim, in slot order."""

    run_id: str
    claims: tuple[int, ...]  # the slot's attempt counter when the gang met, by slot

    @property
    def size(self) -> int:
        return len(self.claims)


def met_gang(session: Session, run_id: str) -> Gang | None:
    """The gang in the run's slots, once all of them are claimed (else ``None``)."""
    run = get_row(session, Run, run_id)
    rows = session.execute(
        select(RunSlot.slot, RunSlot.attempt, RunSlot.claimed_at)
        .where(RunSlot.run_id == run_id)
        .order_by(RunSlot.slot)
    ).all()
    if len(rows) < run.workers or any(claimed is None for _, _, claimed in rows):
        return None
    return Gang(run_id=run_id, claims=tuple(int(attempt) for _, attempt, _ in rows))


def start_gang(
    session: Session,
    gang: Gang,
    *,
    worker_host: str,
    distribution: Mapping[str, Any],
) -> int | None:
    """The chief claims the run for its gang: ``queued`` → ``running``, one attempt more.

    Only while the gang still holds every slot (a worker that gave up waiting in between
    freed its slot: then nothing is claimed, and the gang is broken before it trains).

    Args:
        distribution: The plan this attempt trains by, the workers' addresses in it; recorded
            as the run's ``distribution``.

    Returns:
        The run's attempt now held, or ``None`` (cancelled, claimed already, gang broken).
    """
    _lock_run(session, gang.run_id)  # ordered with a member leaving: see leave_unstarted
    if broken_why(session, gang, stale_after_s=None) is not None:
        return None
    attempt = RUN_JOBS.claim(session, gang.run_id, worker_host=worker_host)
    if attempt is not None:
        session.execute(
            update(Run).where(Run.id == gang.run_id).values(distribution=dict(distribution))
        )
    return attempt


def leave_unstarted(session: Session, claim: SlotClaim) -> Literal["freed", "joined", "lost"]:
    """A waiting worker gives up its slot, unless its gang started with it meanwhile.

    The chief's :func:`start_gang` and this take the run's row lock first, so one of them
    goes wholly before the other: either the slot is freed before the chief looks at the
    slots (it then finds the gang broken and claims nothing), or the chief's claim is
    committed first and the slot is kept. Without that order, on PostgreSQL, a chief could
    read every slot held, a member free its slot, and the chief start an attempt that stops
    at once, one of the run's attempts spent for nothing.

    Returns:
        ``freed``; ``joined``: the run is running with this slot still held (its worker
        trains in that attempt); ``lost``: the slot was no longer this claim's.
    """
    _lock_run(session, claim.run_id)
    status = session.execute(select(Run.status).where(Run.id == claim.run_id)).scalar_one_or_none()
    if status is None:  # the run was deleted while it waited
        return "lost"
    if status == RunStatus.RUNNING:
        held = session.execute(
            select(RunSlot.slot).where(
                RunSlot.run_id == claim.run_id, RunSlot.slot == claim.slot,
                RunSlot.attempt == claim.attempt, RunSlot.claimed_at.is_not(None),
            )
        ).first()  # fmt: skip
        return "joined" if held is not None else "lost"
    return "freed" if release_slot(session, claim) else "lost"


def _lock_run(session: Session, run_id: str) -> None:
    """Take the run's row for this transaction: a row lock on PostgreSQL, the database's write
    lock on SQLite (whose driver starts a transaction only at a write, and ignores FOR UPDATE;
    hence an UPDATE that changes nothing rather than a SELECT ... FOR UPDATE)."""
    session.execute(
        update(Run).where(Run.id == run_id).values(workers=Run.workers),
        execution_options={"synchronize_session": False},
    )


def broken_why(session: Session, gang: Gang, *, stale_after_s: float | None) -> str | None:
    """Why ``gang`` cannot go on, or ``None`` while every slot is still its claim and alive.

    A slot freed or claimed by another worker since the gang met, or (with ``stale_after_s``)
    one whose heartbeat is older than that: its worker stopped.
    """
    rows = session.execute(
        select(RunSlot.slot, RunSlot.attempt, RunSlot.claimed_at, RunSlot.heartbeat_at)
        .where(RunSlot.run_id == gang.run_id)
        .order_by(RunSlot.slot)
    ).all()
    held = {slot: (attempt, claimed, beat) for slot, attempt, claimed, beat in rows}
    cutoff = None if stale_after_s is None else utcnow() - timedelta(seconds=stale_after_s)
    for slot, attempt in enumerate(gang.claims):
        now_attempt, claimed, beat = held.get(slot, (None, None, None))
        if claimed is None or now_attempt != attempt:
            return f"the worker of slot {slot} left the run"
        if cutoff is not None and (beat is None or beat < cutoff):
            return f"the worker of slot {slot} stopped (no heartbeat for {stale_after_s:g} s)"
    return None


def requeue_gang(session: Session, run_id: str, *, attempt: int, why: str) -> ReclaimOutcome:
    """Stop attempt ``attempt`` of a gang's run: queue it again and free all its slots.

    The run goes back to ``queued``, unless it has used ``max_attempts`` (``failed``, "gave up
    after N attempts: why") or a cancel is pending (``cancelled``). Each is one conditional
    UPDATE fenced by the attempt, so of the survivors and sweepers that notice the same fault
    exactly one wins; the others get ``NOT_STALE`` (the attempt is over already).

    Returns:
        What happened; on ``REQUEUED`` the caller sends the run's task messages again.
    """
    held = and_(*RUN_JOBS.held(run_id, attempt))
    now = utcnow()
    outcome = ReclaimOutcome.NOT_STALE
    if changed(
        session,
        update(Run)
        .where(held, Run.cancel_requested.is_(True))
        .values(status=RunStatus.CANCELLED, finished_at=now, error=f"cancelled: {why}"),
    ):
        outcome = ReclaimOutcome.CANCELLED
    elif changed(
        session,
        update(Run)
        .where(held, Run.attempts >= Run.max_attempts)
        .values(
            status=RunStatus.FAILED,
            finished_at=now,
            error=literal("gave up after ", String)
            + sql_cast(Run.attempts, String)
            + literal(f" attempts: {why}", String),
        ),
    ):
        outcome = ReclaimOutcome.GAVE_UP
    elif changed(
        session,
        update(Run)
        .where(held, Run.attempts < Run.max_attempts, Run.cancel_requested.is_(False))
        .values(status=RunStatus.QUEUED, error=f"attempt {attempt} stopped: {why}"),
    ):
        outcome = ReclaimOutcome.REQUEUED
    if outcome is not ReclaimOutcome.NOT_STALE:
        release_slots(session, run_id)
    return outcome


def broken_gangs(session: Session, *, stale_after_s: float) -> list[tuple[str, int, str]]:
    """The running multi-worker runs whose gang is broken: ``(run id, attempt, why)`` each.

    Broken: the run's heartbeat (the chief's worker beats it) is older than ``stale_after_s``,
    or one of its slots is free or stale. For the sweeper: survivors notice their own gang's
    fault sooner; this also finds gangs none of whose workers survived.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    run_stale = or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff)
    slot_stale = or_(
        RunSlot.claimed_at.is_(None), RunSlot.heartbeat_at.is_(None), RunSlot.heartbeat_at < cutoff
    )
    running = and_(Run.status == RunStatus.RUNNING, Run.workers > 1)
    found: dict[str, tuple[str, int, str]] = {}
    for run_id, attempt in session.execute(select(Run.id, Run.attempts).where(running, run_stale)):
        found[run_id] = (run_id, int(attempt), f"no heartbeat for {stale_after_s:g} s")
    rows = session.execute(
        select(Run.id, Run.attempts, RunSlot.slot)
        .join(RunSlot, RunSlot.run_id == Run.id)
        .where(running, slot_stale)
        .order_by(Run.id, RunSlot.slot)
    )
    for run_id, attempt, slot in rows:
        why = f"the worker of slot {slot} stopped (no heartbeat for {stale_after_s:g} s)"
        found.setdefault(run_id, (run_id, int(attempt), why))
    return list(found.values())
