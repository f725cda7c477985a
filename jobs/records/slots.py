"""The rendezvous of a multi-worker run: N slots, claimed one per worker, read as one cluster.

A run with ``workers`` N > 1 trains only once N workers have met (gang scheduling, issue 13)::

    free ──claim_slot──▶ claimed ──(all N claimed)──▶ read_cluster → host:port of every slot
      ▲                     │
      ├──release_slot───────┤ (its worker gave up waiting for the gang, or stopped)
      └──release_stale_slots┤ (its heartbeat is older than the deadline)
      └──release_slots──────┘ (the whole gang: a fault, a cancel, the end of an attempt)

Slot 0 is the chief. The rows are made on the first claim (``runs.workers`` of them), so a run
needs nothing more at creation. Every state change that can race is one conditional UPDATE
of one row: two workers never hold the same slot, and a claim's heartbeats are fenced by the
slot's ``attempt``, so a worker whose slot was released and claimed again cannot keep it.

Plain functions over a :class:`~sqlalchemy.orm.Session`: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session

from jobs.records.models import Run, RunSlot, RunStatus, utcnow
from jobs.records.sql import changed, dialect_insert, get_row


@dataclass(frozen=True)
class SlotClaim:
    """A slot this worker holds: which run, which slot, and in which of the slot's claims."""

    run_id: str
    slot: int
    attempt: int

    @property
    def chief(self) -> bool:
        return self.slot == 0


def claim_slot(session: Session, run_id: str, *, worker_host: str, port: int) -> SlotClaim | None:
    """Take the lowest free slot of a queued run for the worker at ``worker_host:port``.

    Returns:
        The claim, or ``None`` when every slot is taken, the run is not queued (running,
        finished) or a cancel is pending.

    Raises:
        RecordNotFound: No such run.
        ValueError: ``port`` is not a TCP port.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must lie in 1..65535; got {port}")
    run = get_row(session, Run, run_id)
    # Make the run's slots if this is the first claim; a concurrent first claim inserts the
    # same rows and one of the two inserts does nothing.
    session.execute(
        dialect_insert(session, RunSlot)
        .values([{"run_id": run_id, "slot": i} for i in range(run.workers)])
        .on_conflict_do_nothing(index_elements=["run_id", "slot"])
    )
    free = session.scalars(
        select(RunSlot.slot)
        .where(RunSlot.run_id == run_id, RunSlot.claimed_at.is_(None))
        .order_by(RunSlot.slot)
    ).all()
    now = utcnow()
    for slot in free:
        # Free when read is not free now: the UPDATE re-checks, and a racer that took the
        # slot first leaves this one nothing to change (PostgreSQL re-reads the row once the
        # racer commits; SQLite lets one writer in at a time).
        if changed(
            session,
            update(RunSlot)
            .where(_slot(run_id, slot), RunSlot.claimed_at.is_(None), _run_claimable(run_id))
            .values(
                worker_host=worker_host,
                port=port,
                claimed_at=now,
                heartbeat_at=now,
                attempt=RunSlot.attempt + 1,
            ),
        ):
            attempt = session.scalars(select(RunSlot.attempt).where(_slot(run_id, slot))).one()
            return SlotClaim(run_id=run_id, slot=slot, attempt=int(attempt))
    return None


def beat_slot(session: Session, claim: SlotClaim) -> bool:
    """Mark the worker holding ``claim`` alive.

    Returns:
        ``False`` when the slot is no longer this claim's (released, perhaps claimed again):
        the worker must stop.
    """
    return bool(
        changed(
            session,
            update(RunSlot).where(_held(claim)).values(heartbeat_at=utcnow()),
        )
    )


def read_cluster(session: Session, run_id: str) -> tuple[str, ...] | None:
    """Every slot's ``host:port`` in slot order, once all of the run's slots are claimed.

    Returns:
        The addresses (``TF_CONFIG``'s worker list; an IPv6 host in brackets), or ``None``
        while a slot is free.

    Raises:
        RecordNotFound: No such run.
    """
    run = get_row(session, Run, run_id)
    rows = session.execute(
        select(RunSlot.worker_host, RunSlot.port)
        .where(RunSlot.run_id == run_id, RunSlot.claimed_at.is_not(None))
        .order_by(RunSlot.slot)
    ).all()
    if len(rows) < run.workers:
        return None
    # A claimed slot always has both (claim_slot writes them together).
    return tuple(_address(str(host), int(port or 0)) for host, port in rows)


def release_stale_slots(
    session: Session, *, stale_after_s: float, run_id: str | None = None
) -> list[SlotClaim]:
    """Free the claimed slots whose heartbeat is older than ``stale_after_s`` seconds.

    Each release is a conditional UPDATE fenced by the claim it read: a worker that beats in
    between keeps its slot.

    Args:
        session: The session.
        stale_after_s: How old a heartbeat must be to count as dead; several heartbeat periods.
        run_id: Only this run's slots; every run's when None.

    Returns:
        The claims released, so that the caller can stop the rest of their gangs.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    stale = and_(
        RunSlot.claimed_at.is_not(None),
        or_(RunSlot.heartbeat_at.is_(None), RunSlot.heartbeat_at < cutoff),
    )
    if run_id is not None:
        stale = and_(stale, RunSlot.run_id == run_id)
    candidates = session.execute(
        select(RunSlot.run_id, RunSlot.slot, RunSlot.attempt)
        .where(stale)
        .order_by(RunSlot.run_id, RunSlot.slot)
    ).all()
    released = []
    for rid, slot, attempt in candidates:
        claim = SlotClaim(run_id=rid, slot=slot, attempt=attempt)
        if changed(session, update(RunSlot).where(_held(claim), stale).values(**_FREE)):
            released.append(claim)
    return released


def release_slot(session: Session, claim: SlotClaim) -> bool:
    """Free the slot ``claim`` holds (its worker gives up waiting, or stops).

    Returns:
        ``False`` if the slot was no longer this claim's: nothing changed.
    """
    return bool(changed(session, update(RunSlot).where(_held(claim)).values(**_FREE)))


def release_slots(session: Session, run_id: str) -> int:
    """Free every slot of the run (its gang stops: a fault, a cancel, the end of an attempt).

    Returns:
        How many slots were claimed and are now free.
    """
    return changed(
        session,
        update(RunSlot)
        .where(RunSlot.run_id == run_id, RunSlot.claimed_at.is_not(None))
        .values(**_FREE),
    )


# A free slot keeps its attempt count: the next claim of it is the next attempt.
_FREE = {"worker_host": None, "port": None, "claimed_at": None, "heartbeat_at": None}


def _slot(run_id: str, slot: int) -> ColumnElement[bool]:
    return and_(RunSlot.run_id == run_id, RunSlot.slot == slot)


def _held(claim: SlotClaim) -> ColumnElement[bool]:
    return and_(
        _slot(claim.run_id, claim.slot),
        RunSlot.attempt == claim.attempt,
        RunSlot.claimed_at.is_not(None),
    )


def _run_claimable(run_id: str) -> ColumnElement[bool]:
    """The run waits for its workers: queued, and no cancel pending."""
    return exists().where(
        Run.id == run_id, Run.status == RunStatus.QUEUED, Run.cancel_requested.is_(False)
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
