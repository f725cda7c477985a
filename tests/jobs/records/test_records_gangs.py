"""The job lifecycle of a run trained by several workers (jobs.records.gangs), on SQLite and on
PostgreSQL: the chief's claim for its gang, a broken gang found from the records, the fault
transition fenced by the attempt, attempts running out, and cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import session_scope
from jobs.records.gangs import (
    Gang,
    broken_gangs,
    broken_why,
    leave_unstarted,
    met_gang,
    requeue_gang,
    start_gang,
)
from jobs.records.lifecycle import RUN_JOBS, ReclaimOutcome
from jobs.records.models import Run, RunStatus
from jobs.records.runs import request_cancel
from jobs.records.slots import SlotClaim, beat_slot, claim_slot, release_slot
from tests.fixtures import gangs

CONFIG = {"architecture": "resnet20", "data": "cifar10", "epochs": 3}
PLAN = {"workers": 2, "global_batch_size": 128}


def new_run(sm: sessionmaker[Session], workers: int = 2, *, max_attempts: int = 3) -> str:
    return gangs.new_run(sm, workers, config=CONFIG, max_attempts=max_attempts)


def meet(sm: sessionmaker[Session], run_id: str, workers: int = 2) -> tuple[list[SlotClaim], Gang]:
    """``workers`` workers claim the run's slots; the gang they form."""
    claims = []
    for i in range(workers):
        with session_scope(sm) as s:
            got = claim_slot(s, run_id, worker_host=f"10.0.0.{i + 1}", port=7000 + i)
        assert got is not None and got.slot == i
        claims.append(got)
    with session_scope(sm) as s:
        gang = met_gang(s, run_id)
    assert gang is not None
    return claims, gang


def start(sm: sessionmaker[Session], gang: Gang) -> int | None:
    with session_scope(sm) as s:
        return start_gang(s, gang, worker_host="chief-host", distribution=PLAN)


def run_row(sm: sessionmaker[Session], run_id: str) -> Run:
    with sm() as s:
        run = RUN_JOBS.get(s, run_id)
        s.expunge(run)
        return run


claimed_slots = gangs.held_slots


def age(sm: sessionmaker[Session], *, run_id: str, slot: int | None, seconds: float) -> None:
    """Make the run's heartbeat (``slot`` None) or one slot's that many seconds old."""
    if slot is None:
        gangs.backdate_beats(sm, run_id, seconds=seconds, run=True)
    else:
        gangs.backdate_beats(sm, run_id, seconds=seconds, slots=[slot])


def requeue(sm: sessionmaker[Session], run_id: str, attempt: int, why: str) -> ReclaimOutcome:
    with session_scope(sm) as s:
        return requeue_gang(s, run_id, attempt=attempt, why=why)


# --- the gang meets and the chief claims the run ---------------------------------------------


def test_the_gang_meets_once_every_slot_is_claimed_and_the_chief_claims_the_run_once(sm):
    run_id = new_run(sm, 3)
    with session_scope(sm) as s:
        assert met_gang(s, run_id) is None  # no slot row yet
        claim_slot(s, run_id, worker_host="10.0.0.1", port=7001)
        claim_slot(s, run_id, worker_host="10.0.0.2", port=7002)
        assert met_gang(s, run_id) is None  # one slot free
        claim_slot(s, run_id, worker_host="10.0.0.3", port=7003)
        gang = met_gang(s, run_id)
    assert gang == Gang(run_id=run_id, claims=(1, 1, 1)) and gang.size == 3
    assert start(sm, gang) == 1
    run = run_row(sm, run_id)
    assert (run.status, run.attempts, run.worker_host) == (RunStatus.RUNNING, 1, "chief-host")
    assert run.distribution == PLAN and run.heartbeat_at is not None
    assert start(sm, gang) is None  # a second delivery of the chief's claim does nothing
    assert run_row(sm, run_id).attempts == 1
    assert claimed_slots(sm, run_id) == [0, 1, 2]  # the slots stay the gang's while it trains


@pytest.mark.parametrize("how", ["freed", "claimed again"])
def test_a_gang_that_broke_before_the_chief_claims_the_run_is_not_started(sm, how):
    """A worker that gave up waiting just as the gang met (or whose slot another worker took
    since): the chief's claim changes nothing and costs no attempt."""
    run_id = new_run(sm)
    claims, gang = meet(sm, run_id)
    with session_scope(sm) as s:
        assert release_slot(s, claims[1])
        if how == "claimed again":
            again = claim_slot(s, run_id, worker_host="10.0.0.9", port=7009)
            assert again == SlotClaim(run_id=run_id, slot=1, attempt=2)
            assert met_gang(s, run_id) == Gang(run_id=run_id, claims=(1, 2))  # another gang
        assert broken_why(s, gang, stale_after_s=None) == "the worker of slot 1 left the run"
    assert start(sm, gang) is None
    run = run_row(sm, run_id)
    assert (run.status, run.attempts, run.distribution) == (RunStatus.QUEUED, 0, None)


def test_a_cancelled_gang_run_is_not_started_and_gives_no_slot(sm):
    run_id = new_run(sm)
    _, gang = meet(sm, run_id)
    with session_scope(sm) as s:
        request_cancel(s, run_id)
    assert start(sm, gang) is None
    assert run_row(sm, run_id).status == RunStatus.CANCELLED
    with session_scope(sm) as s:
        assert claim_slot(s, run_id, worker_host="10.0.0.9", port=7009) is None


# --- what breaks a gang ----------------------------------------------------------------------


def test_broken_why_names_the_first_slot_lost_or_stale(sm):
    run_id = new_run(sm, 3)
    claims, gang = meet(sm, run_id, 3)
    with sm() as s:
        assert broken_why(s, gang, stale_after_s=60) is None
    age(sm, run_id=run_id, slot=2, seconds=120)
    with sm() as s:
        assert broken_why(s, gang, stale_after_s=300) is None  # not old enough
        assert broken_why(s, gang, stale_after_s=60) == (
            "the worker of slot 2 stopped (no heartbeat for 60 s)"
        )
        assert broken_why(s, gang, stale_after_s=None) is None  # staleness not asked about
    with session_scope(sm) as s:
        assert release_slot(s, claims[1])
    with sm() as s:
        assert broken_why(s, gang, stale_after_s=60) == "the worker of slot 1 left the run"


def test_broken_gangs_finds_running_gangs_whose_run_or_a_slot_stopped_beating(sm):
    alive, slot_stale, run_stale = new_run(sm), new_run(sm), new_run(sm)
    waiting = new_run(sm)  # queued, a stale slot: the sweeper frees it, no gang to stop
    one_worker = new_run(sm, 1)  # running and stale: the one-worker sweep's
    for run_id in (alive, slot_stale, run_stale):
        _, gang = meet(sm, run_id)
        assert start(sm, gang) == 1
    with session_scope(sm) as s:
        claim_slot(s, waiting, worker_host="10.0.0.1", port=7001)
        assert RUN_JOBS.claim(s, one_worker, worker_host="w") == 1
    age(sm, run_id=slot_stale, slot=1, seconds=120)
    age(sm, run_id=run_stale, slot=None, seconds=120)
    age(sm, run_id=waiting, slot=0, seconds=120)
    age(sm, run_id=one_worker, slot=None, seconds=120)
    with sm() as s:
        assert broken_gangs(s, stale_after_s=300) == []
        found = sorted(broken_gangs(s, stale_after_s=60))
    assert found == sorted(
        [
            (slot_stale, 1, "the worker of slot 1 stopped (no heartbeat for 60 s)"),
            (run_stale, 1, "no heartbeat for 60 s"),
        ]
    )


def test_broken_gangs_finds_a_running_gang_with_a_free_slot(sm):
    run_id = new_run(sm)
    claims, gang = meet(sm, run_id)
    assert start(sm, gang) == 1
    with session_scope(sm) as s:
        release_slot(s, claims[0])
    with sm() as s:
        assert broken_gangs(s, stale_after_s=60) == [
            (run_id, 1, "the worker of slot 0 stopped (no heartbeat for 60 s)")
        ]


# --- the fault transition --------------------------------------------------------------------


def test_a_fault_queues_the_run_again_and_frees_every_slot_in_the_callers_transaction(sm):
    run_id = new_run(sm, 3)
    claims, gang = meet(sm, run_id, 3)
    assert start(sm, gang) == 1
    why = "the worker of slot 2 failed: out of memory"
    with sm() as s:  # rolled back: the run and its slots change together or not at all
        assert requeue_gang(s, run_id, attempt=1, why=why) is ReclaimOutcome.REQUEUED
        s.rollback()
    assert run_row(sm, run_id).status == RunStatus.RUNNING
    assert claimed_slots(sm, run_id) == [0, 1, 2]
    assert requeue(sm, run_id, 1, why) is ReclaimOutcome.REQUEUED
    run = run_row(sm, run_id)
    assert (run.status, run.attempts) == (RunStatus.QUEUED, 1)
    assert run.error == f"attempt 1 stopped: {why}"
    assert run.finished_at is None
    assert claimed_slots(sm, run_id) == []
    with session_scope(sm) as s:
        assert not any(beat_slot(s, c) for c in claims)  # the old gang must stop
        assert not RUN_JOBS.beat(s, run_id, attempt=1)
    # The next gang meets in the same slots, each slot's claim counted on, and is attempt 2.
    _, again = meet(sm, run_id, 3)
    assert again.claims == (2, 2, 2)
    assert start(sm, again) == 2
    assert run_row(sm, run_id).error is None


def test_a_stale_attempts_requeue_changes_nothing(sm):
    """A survivor or sweeper of attempt 1 that acts late, once attempt 2 trains (or waits for
    its gang), must not stop the newer gang."""
    run_id = new_run(sm)
    _, gang = meet(sm, run_id)
    assert start(sm, gang) == 1
    assert requeue(sm, run_id, 1, "slot 1 stopped") is ReclaimOutcome.REQUEUED
    assert requeue(sm, run_id, 1, "slot 1 stopped") is ReclaimOutcome.NOT_STALE  # already done
    with session_scope(sm) as s:  # the next gang is waiting: one slot claimed
        claim_slot(s, run_id, worker_host="10.0.0.5", port=7005)
    assert requeue(sm, run_id, 1, "late") is ReclaimOutcome.NOT_STALE
    assert claimed_slots(sm, run_id) == [0]
    with session_scope(sm) as s:
        claim_slot(s, run_id, worker_host="10.0.0.6", port=7006)
        second = met_gang(s, run_id)
    assert second is not None and start(sm, second) == 2
    assert requeue(sm, run_id, 1, "late") is ReclaimOutcome.NOT_STALE
    run = run_row(sm, run_id)
    assert (run.status, run.attempts, run.error) == (RunStatus.RUNNING, 2, None)
    assert claimed_slots(sm, run_id) == [0, 1]


def test_of_survivors_noticing_the_same_fault_at_once_exactly_one_requeues(sm):
    run_id = new_run(sm, 3)
    _, gang = meet(sm, run_id, 3)
    assert start(sm, gang) == 1
    racers = 3
    barrier = threading.Barrier(racers)
    outcomes: list[ReclaimOutcome] = []
    errors: list[BaseException] = []

    def survivor(i: int) -> None:
        try:
            barrier.wait()
            outcomes.append(requeue(sm, run_id, 1, f"seen by slot {i}"))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=survivor, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(outcomes) == sorted([ReclaimOutcome.REQUEUED] + [ReclaimOutcome.NOT_STALE] * 2)
    assert run_row(sm, run_id).status == RunStatus.QUEUED
    assert claimed_slots(sm, run_id) == []


def test_every_attempt_counts_and_the_run_fails_when_they_run_out(sm):
    run_id = new_run(sm, max_attempts=3)
    for attempt in (1, 2, 3):
        _, gang = meet(sm, run_id)
        assert start(sm, gang) == attempt
        outcome = requeue(sm, run_id, attempt, "the worker of slot 0 stopped")
        assert claimed_slots(sm, run_id) == []
        expected = ReclaimOutcome.GAVE_UP if attempt == 3 else ReclaimOutcome.REQUEUED
        assert outcome is expected
    run = run_row(sm, run_id)
    assert (run.status, run.attempts) == (RunStatus.FAILED, 3)
    assert run.error == "gave up after 3 attempts: the worker of slot 0 stopped"
    assert run.finished_at is not None
    with session_scope(sm) as s:
        assert claim_slot(s, run_id, worker_host="10.0.0.9", port=7009) is None


def test_a_fault_with_a_cancel_pending_cancels_the_run_and_frees_its_slots(sm):
    run_id = new_run(sm)
    _, gang = meet(sm, run_id)
    assert start(sm, gang) == 1
    with session_scope(sm) as s:
        cancelled = request_cancel(s, run_id)
        assert (cancelled.status, cancelled.cancel_requested) == (RunStatus.RUNNING, True)
    assert requeue(sm, run_id, 1, "the worker of slot 1 stopped") is ReclaimOutcome.CANCELLED
    run = run_row(sm, run_id)
    assert run.status == RunStatus.CANCELLED
    assert run.error == "cancelled: the worker of slot 1 stopped"
    assert run.finished_at is not None
    assert claimed_slots(sm, run_id) == []
    with session_scope(sm) as s:
        assert claim_slot(s, run_id, worker_host="10.0.0.9", port=7009) is None


def test_a_cancel_pending_wins_over_running_out_of_attempts(sm):
    run_id = new_run(sm, max_attempts=1)
    _, gang = meet(sm, run_id)
    assert start(sm, gang) == 1
    with session_scope(sm) as s:
        request_cancel(s, run_id)
    assert requeue(sm, run_id, 1, "slot 0 stopped") is ReclaimOutcome.CANCELLED
    assert run_row(sm, run_id).status == RunStatus.CANCELLED


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(value=work()))
    thread.start()
    return thread, result


def test_a_member_leaving_as_the_chief_starts_frees_its_slot_before_or_joins_after(sm):
    """A member giving up its slot and the chief starting the gang are ordered by the run's
    row: whichever takes it first goes wholly first, so no attempt starts with a slot that is
    being freed (on PostgreSQL, without the order, the chief could read every slot held while
    the member freed one: an attempt spent on a gang already broken)."""
    # The member first: its slot is freed; the chief, waiting meanwhile, then claims nothing.
    run_id = new_run(sm)
    claims, gang = meet(sm, run_id)
    member = sm()
    assert leave_unstarted(member, claims[1]) == "freed"  # its transaction still open
    chief, started = _in_thread(lambda: start(sm, gang))
    time.sleep(0.5)
    assert chief.is_alive(), "the chief waits for the member's transaction"
    member.commit()
    member.close()
    chief.join(30)
    assert started["value"] is None
    run = run_row(sm, run_id)
    assert (run.status, run.attempts) == (RunStatus.QUEUED, 0)
    assert claimed_slots(sm, run_id) == [0]

    # The chief first: the attempt starts; the member, waiting meanwhile, keeps its slot.
    run_id = new_run(sm)
    claims, gang = meet(sm, run_id)
    chief_session = sm()
    attempt = start_gang(chief_session, gang, worker_host="chief-host", distribution=PLAN)
    assert attempt == 1

    def leave() -> str:
        with session_scope(sm) as s:
            return leave_unstarted(s, claims[1])

    member_thread, left = _in_thread(leave)
    time.sleep(0.5)
    assert member_thread.is_alive(), "the member waits for the chief's transaction"
    chief_session.commit()
    chief_session.close()
    member_thread.join(30)
    assert left["value"] == "joined"
    run = run_row(sm, run_id)
    assert (run.status, run.attempts) == (RunStatus.RUNNING, 1)
    assert claimed_slots(sm, run_id) == [0, 1]


def test_leaving_a_slot_that_was_taken_over_changes_nothing(sm):
    run_id = new_run(sm)
    claims, _ = meet(sm, run_id)
    with session_scope(sm) as s:
        assert release_slot(s, claims[1])
    with session_scope(sm) as s:  # another worker takes the slot
        again = claim_slot(s, run_id, worker_host="10.0.0.9", port=7009)
    assert again is not None and again.slot == 1
    with session_scope(sm) as s:
        assert leave_unstarted(s, claims[1]) == "lost"
    assert claimed_slots(sm, run_id) == [0, 1]
