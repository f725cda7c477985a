"""The sweep of multi-worker runs (worker.sweeper.requeue_gangs), in process on SQLite and
PostgreSQL: a gang none of whose workers survived is queued again once with its slots freed; a
live gang is left alone; the slots of workers that died while waiting are freed and their
messages sent again. ``send`` records the messages (no broker, no worker process)."""

from __future__ import annotations

import threading

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import session_scope
from jobs.records.gangs import met_gang, requeue_gang, start_gang
from jobs.records.lifecycle import RUN_JOBS, ReclaimOutcome
from jobs.records.models import Run, RunStatus
from jobs.records.slots import SlotClaim, beat_slot
from tests.fixtures.gangs import backdate_beats, claim, held_slots, new_run
from worker.sweeper import requeue_gangs

STALE_S = 60.0


def training_gang(sm: sessionmaker[Session], workers: int = 2) -> tuple[str, list[SlotClaim]]:
    """A run whose gang met and trains in attempt 1."""
    run_id = new_run(sm, workers)
    claims = [claim(sm, run_id, f"10.0.0.{i + 1}") for i in range(workers)]
    with session_scope(sm) as s:
        gang = met_gang(s, run_id)
        assert gang is not None
        assert start_gang(s, gang, worker_host="chief", distribution={}) == 1
    return run_id, claims


def stop_beating(sm: sessionmaker[Session], run_id: str, *slots: int, run: bool = False) -> None:
    """These slots' workers (and with ``run``, the chief's beat of the run) stopped 2 min ago."""
    backdate_beats(sm, run_id, seconds=2 * STALE_S, slots=slots, run=run)


def sweep(sm: sessionmaker[Session], sent: list[tuple[str, int]]) -> list[str]:
    return requeue_gangs(sm, stale_after_s=STALE_S, send=lambda r, n: sent.append((r, n)))


def status(sm: sessionmaker[Session], run_id: str) -> tuple[RunStatus, int, str | None]:
    with sm() as s:
        run = RUN_JOBS.get(s, run_id)
        return run.status, run.attempts, run.error


def test_a_gang_none_of_whose_workers_survived_is_queued_again_once_with_its_slots_freed(
    records,
):
    run_id, claims = training_gang(records, 3)
    stop_beating(records, run_id, 0, 1, 2, run=True)
    sent: list[tuple[str, int]] = []
    assert sweep(records, sent) == [run_id]
    assert sent == [(run_id, 3)]  # one message per slot, once
    assert status(records, run_id) == (
        RunStatus.QUEUED,
        1,
        f"attempt 1 stopped: no heartbeat for {STALE_S:g} s",
    )
    assert held_slots(records, run_id) == []
    with session_scope(records) as s:
        assert not any(beat_slot(s, c) for c in claims)
    assert sweep(records, sent) == [] and sent == [(run_id, 3)]  # the next sweep: nothing
    # A late survivor of attempt 1 changes nothing either.
    with session_scope(records) as s:
        late = requeue_gang(s, run_id, attempt=1, why="late")
        assert late is ReclaimOutcome.NOT_STALE
    assert status(records, run_id)[:2] == (RunStatus.QUEUED, 1)


def test_sweepers_of_several_workers_at_once_queue_a_dead_gang_again_once(records):
    run_id, _ = training_gang(records)
    stop_beating(records, run_id, 0, 1, run=True)
    sent: list[tuple[str, int]] = []
    sweepers = 3
    barrier = threading.Barrier(sweepers)
    errors: list[BaseException] = []

    def one_sweep() -> None:
        try:
            barrier.wait()
            sweep(records, sent)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=one_sweep) for _ in range(sweepers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sent == [(run_id, 2)]
    assert status(records, run_id)[:2] == (RunStatus.QUEUED, 1)
    assert held_slots(records, run_id) == []


def test_a_live_gang_is_left_alone(records):
    run_id, claims = training_gang(records)
    sent: list[tuple[str, int]] = []
    assert sweep(records, sent) == [] and sent == []
    assert status(records, run_id) == (RunStatus.RUNNING, 1, None)
    assert held_slots(records, run_id) == [0, 1]
    with session_scope(records) as s:
        assert all(beat_slot(s, c) for c in claims)


def test_a_gang_with_one_dead_member_is_stopped_once_by_the_sweep_or_its_survivor(records):
    """The survivor would stop the gang itself (worker.gang); the sweep that gets there first
    does the same, and the survivor's own requeue then changes nothing: N messages in all."""
    run_id, claims = training_gang(records)
    stop_beating(records, run_id, 1)  # the chief lives: its slot and the run beat
    sent: list[tuple[str, int]] = []
    assert sweep(records, sent) == [run_id] and sent == [(run_id, 2)]
    assert status(records, run_id) == (
        RunStatus.QUEUED,
        1,
        f"attempt 1 stopped: the worker of slot 1 stopped (no heartbeat for {STALE_S:g} s)",
    )
    with session_scope(records) as s:
        assert not beat_slot(s, claims[0])  # the survivor learns its slot is gone ...
        survivor = requeue_gang(s, run_id, attempt=1, why="slot 1 stopped")
        assert survivor is ReclaimOutcome.NOT_STALE  # ... and, racing, would send nothing
    assert sweep(records, sent) == [] and sent == [(run_id, 2)]


def test_the_sweep_frees_the_slots_of_workers_that_died_waiting_and_sends_their_messages(
    records,
):
    waiting = new_run(records, 3)
    dead, alive, _ = (claim(records, waiting, h) for h in ("dead", "alive", "dead-too"))
    stop_beating(records, waiting, 0, 2)
    finished = new_run(records)  # its worker died after the run ended: freed, nothing sent
    leftover = claim(records, finished, "gone")
    with session_scope(records) as s:
        s.execute(update(Run).where(Run.id == finished).values(status=RunStatus.SUCCEEDED))
    stop_beating(records, finished, 0)
    sent: list[tuple[str, int]] = []
    assert sweep(records, sent) == [waiting, waiting]
    assert sent == [(waiting, 1), (waiting, 1)]
    assert held_slots(records, waiting) == [1]  # the live waiter keeps its slot
    assert status(records, waiting) == (RunStatus.QUEUED, 0, None)
    with session_scope(records) as s:
        assert beat_slot(s, alive) and not beat_slot(s, dead)
        assert not beat_slot(s, leftover)
    assert held_slots(records, finished) == []
