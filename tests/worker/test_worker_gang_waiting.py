"""A multi-worker run's delivery before its gang trains (worker.gang), in process on SQLite and
PostgreSQL: the wait for the gang and its deadline, dead peers, a gang that breaks before it
starts, a cancel while waiting.

No broker and no worker process: ``send`` records the messages a worker would send again, so each
test counts them. The rule they check: once a delivery is over, a queued run has one message per
free slot (a slot held by a live waiting worker holds its message); a message too few and the
gang never meets again, since the broker still holds one for the run and the lost-message sweep
(:func:`worker.sweeper.resend_lost`) sends nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import session_scope
from jobs.records.gangs import Gang
from jobs.records.lifecycle import RUN_JOBS
from jobs.records.models import Run, RunSlot, RunStatus
from jobs.records.runs import request_cancel
from jobs.records.slots import SlotClaim, release_slot
from jobs.settings import Settings
from tests.fixtures import gangs
from tests.fixtures.gangs import backdate_beats, claim
from worker.gang import GangSlot, run_gang_slot

CONFIG = {
    "architecture": "resnet8",
    "data": "synthetic:64:16x16x3:3",
    "epochs": 2,
    "batch_size": 16,
}
WAIT_S = 0.5  # RESNET_GANG_WAIT_SECONDS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        heartbeat_seconds=0.05,
        stale_after_seconds=60,
        gang_wait_seconds=WAIT_S,
        collective_host="127.0.0.1",
    )


class Sent(list[tuple[str, int]]):
    """The task messages sent again: ``(run id, how many)`` each."""

    def __call__(self, run_id: str, times: int) -> None:
        self.append((run_id, times))

    def messages(self, run_id: str) -> int:
        return sum(times for rid, times in self if rid == run_id)


def new_run(sm: sessionmaker[Session], workers: int = 2) -> str:
    return gangs.new_run(sm, workers, config=CONFIG)


def die(sm: sessionmaker[Session], claim: SlotClaim) -> None:
    """The worker holding ``claim`` died two minutes ago (its message with it)."""
    backdate_beats(sm, claim.run_id, seconds=120, slots=[claim.slot])


def slots(sm: sessionmaker[Session], run_id: str) -> list[tuple[int, str | None, int]]:
    """Each slot's (index, worker host or None when free, how many times it was claimed)."""
    with sm() as s:
        rows = s.execute(
            select(RunSlot.slot, RunSlot.worker_host, RunSlot.attempt)
            .where(RunSlot.run_id == run_id)
            .order_by(RunSlot.slot)
        ).all()
    return [(slot, host, attempt) for slot, host, attempt in rows]


def free_slots(sm: sessionmaker[Session], run_id: str) -> int:
    return sum(host is None for _, host, _ in slots(sm, run_id))


def assert_waits_untouched(sm: sessionmaker[Session], run_id: str) -> None:
    """Still queued, and no attempt made or recorded."""
    with sm() as s:
        run = RUN_JOBS.get(s, run_id)
        assert (run.status, run.attempts, run.error) == (RunStatus.QUEUED, 0, None)
        assert (run.started_at, run.heartbeat_at, run.worker_host) == (None, None, None)
        assert (run.epochs_completed, run.distribution) == (0, None)


def deliver(sm: sessionmaker[Session], settings: Settings, run_id: str, sent: Sent) -> str:
    return run_gang_slot(run_id, settings=settings, sessions=sm, send=sent)


def test_a_worker_without_its_gang_frees_its_slot_at_the_deadline_and_sends_its_message_again(
    records, settings
):
    run_id = new_run(records)
    sent = Sent()
    started = time.monotonic()
    assert deliver(records, settings, run_id, sent) == "waiting"
    assert time.monotonic() - started >= WAIT_S
    assert sent == [(run_id, 1)]
    assert slots(records, run_id) == [(0, None, 1), (1, None, 0)]  # claimed once, freed
    assert_waits_untouched(records, run_id)
    # The message it sent comes back to a worker that fares no better: the same again, and
    # still nothing recorded but the slot's claim count.
    assert deliver(records, settings, run_id, sent) == "waiting"
    assert sent == [(run_id, 1), (run_id, 1)]
    assert slots(records, run_id) == [(0, None, 2), (1, None, 0)]
    assert_waits_untouched(records, run_id)


def test_a_worker_that_waits_beats_its_slot_until_the_deadline(records, settings):
    # A wait long enough to see several beats however loaded the machine is.
    waiting = settings.model_copy(update={"gang_wait_seconds": 3.0})
    run_id = new_run(records)
    sent = Sent()
    worker = threading.Thread(target=deliver, args=(records, waiting, run_id, sent))
    worker.start()
    beats: list[datetime] = []
    deadline = time.monotonic() + 3.0
    while len(set(beats)) < 3 and time.monotonic() < deadline:
        with records() as s:
            beat = s.scalar(select(RunSlot.heartbeat_at).where(RunSlot.run_id == run_id))
        if beat is not None:
            beats.append(beat)
        time.sleep(0.05)
    worker.join()
    assert len(set(beats)) >= 3  # it beat while it waited
    assert sent == [(run_id, 1)] and free_slots(records, run_id) == 2


def test_a_waiting_worker_frees_a_dead_peers_slot_and_sends_its_message_too(records, settings):
    """The chief's worker died while waiting; a worker that arrives later meets no gang (a
    dead slot is no member) and, once its wait is over, has sent a message for both slots."""
    run_id = new_run(records)
    dead = claim(records, run_id, "dead")
    die(records, dead)
    sent = Sent()
    assert deliver(records, settings, run_id, sent) == "waiting"
    assert sent.messages(run_id) == 2 == free_slots(records, run_id)
    assert_waits_untouched(records, run_id)


def test_a_dead_waiters_slot_does_not_start_an_attempt(records, settings):
    """A dead worker's stale slot 1 and a new chief: the chief frees it rather than starting an
    attempt that would stop at once (and cost one of the run's attempts)."""
    run_id = new_run(records)
    gone, dead = claim(records, run_id, "gone"), claim(records, run_id, "dead")
    with session_scope(records) as s:
        release_slot(s, gone)
    die(records, dead)
    sent = Sent()
    assert deliver(records, settings, run_id, sent) == "waiting"
    assert sent.messages(run_id) == 2 == free_slots(records, run_id)
    assert_waits_untouched(records, run_id)


def met(
    sm: sessionmaker[Session], settings: Settings, run_id: str, sent: Sent
) -> tuple[list[GangSlot], Gang, tuple[str, ...]]:
    """Two workers claim the run's two slots and both see their gang met."""
    members = [
        GangSlot(claim(sm, run_id, host), settings=settings, sessions=sm, send=sent)
        for host in ("10.0.0.1", "10.0.0.2")
    ]
    seen = [member.wait_for_gang() for member in members]
    assert seen[0] is not None and seen[0] == seen[1]
    gang, cluster = seen[0]
    return members, gang, cluster


@pytest.mark.parametrize("leaver", [0, 1])
def test_a_gang_that_breaks_before_it_starts_sends_every_freed_slots_message_again(
    records, settings, leaver
):
    """One member gives up waiting just as the gang met (it frees its slot and sends its own
    message again, as at its deadline); the other finds its gang broken before the attempt —
    the chief when it claims the run, the other while it waits for the chief — frees its
    slot too, and must send its message again as well."""
    # A deadline far beyond the few ticks seeing the gang broken takes, even on a loaded
    # machine: leaving well before it shows the stayer saw the break, not its deadline.
    patient = settings.model_copy(update={"gang_wait_seconds": 60.0})
    run_id = new_run(records)
    sent = Sent()
    members, gang, cluster = met(records, patient, run_id, sent)
    with session_scope(records) as s:
        assert release_slot(s, members[leaver].claim)
    sent(run_id, 1)  # the leaver's message, sent again
    stayer = members[1 - leaver]
    started = time.monotonic()
    assert stayer.start(gang, cluster) is None
    assert time.monotonic() - started < 30  # it saw the gang broken, not its deadline
    assert sent.messages(run_id) == 2 == free_slots(records, run_id)
    assert_waits_untouched(records, run_id)


def test_a_waiting_worker_leaves_a_run_cancelled_meanwhile_at_once(records, settings):
    run_id = new_run(records)
    sent = Sent()
    slow = settings.model_copy(update={"gang_wait_seconds": 30.0})
    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(deliver(records, slow, run_id, sent)), daemon=True
    )
    worker.start()
    wait_until(lambda: free_slots(records, run_id) == 1)  # it holds slot 0
    with session_scope(records) as s:
        request_cancel(s, run_id)
    started = time.monotonic()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 15  # not its 30 s deadline
    assert outcome == ["waiting"] and sent == []  # a cancelled run needs no message
    assert free_slots(records, run_id) == 2
    with records() as s:
        assert s.scalar(select(Run.status).where(Run.id == run_id)) == RunStatus.CANCELLED


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_member_whose_deadline_passes_as_the_chief_starts_joins_the_attempt(records, settings):
    """The member's wait for the chief ends just after the chief started the gang: it keeps
    its slot and trains in that attempt (leaving would break the gang at once and spend one of
    the run's attempts), sending no message."""
    run_id = new_run(records)
    sent = Sent()
    members, gang, cluster = met(records, settings, run_id, sent)
    chief, member = members
    assert chief.start(gang, cluster) == 1
    assert member._leave_waiting() == 1
    assert free_slots(records, run_id) == 0 and sent.messages(run_id) == 0
    with records() as s:
        run = RUN_JOBS.get(s, run_id)
        assert (run.status, run.attempts) == (RunStatus.RUNNING, 1)


def test_a_member_that_joins_a_gang_already_broken_leaves_instead_of_looking_again(
    records, settings
):
    """The gang started with this slot as it gave up, but a peer has left since: the member
    frees its slot at once (the requeue that follows sends the run's messages) rather than
    finding the run running and its gang incomplete again and again."""
    run_id = new_run(records)
    sent = Sent()
    members, gang, cluster = met(records, settings, run_id, sent)
    chief, member = members
    assert chief.start(gang, cluster) == 1
    with session_scope(records) as s:
        assert release_slot(s, chief.claim)  # the chief is gone
    assert member._leave_waiting() == 1  # its slot was in the attempt that started
    assert member._joined() is None
    assert free_slots(records, run_id) == 2 and sent.messages(run_id) == 0


def test_a_member_whose_chief_cancelled_the_run_reports_it_cancelled(records, settings, tmp_path):
    """The chief's cancel finishes the run and frees every slot, the member's too; the member
    watching its process then reports the run cancelled, not its slot lost."""
    import subprocess
    import sys

    run_id = new_run(records)
    members, gang, cluster = met(records, settings, run_id, Sent())
    chief, member = members
    assert chief.start(gang, cluster) == 1 and member.start(gang, cluster) == 1
    processes = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in members
    ]
    try:
        with session_scope(records) as s:
            request_cancel(s, run_id)
        assert chief._cancel(processes[0], 1) == "cancelled"
        assert free_slots(records, run_id) == 2  # the member's slot too
        assert member._watch(processes[1], gang, 1, tmp_path / "result.json") == "cancelled"
    finally:
        for process in processes:
            process.kill()
            process.wait()
