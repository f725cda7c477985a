"""One delivery of a multi-worker run's task: take a slot, meet the gang, train, watch.

A run with ``workers`` N > 1 has N task messages in the queue (``worker.train_run``, the same
task as a one-worker run's: :func:`worker.tasks.train_run` sends it here). Each delivery:

1. **Slot.** Claims the run's lowest free slot (:func:`jobs.records.slots.claim_slot`) with this
   worker's collective address (``RESNET_COLLECTIVE_HOST``/``_PORT``; port 0: a free one). No
   free slot, or the run is not queued: nothing to do (extra messages are harmless).
2. **Gang.** Waits, beating its slot, until all N slots are claimed by live workers. Peers
   whose slot went stale while waiting (their worker died) are freed first, and their slot's
   message sent again. After ``gang_wait_seconds`` without a full gang it frees its slot and
   sends its own message again, so that the worker can take other jobs and the run waits in
   the queue. A run cancelled meanwhile: it frees its slot at once and sends nothing.
3. **Start.** The chief (slot 0) claims the run for the gang (:func:`jobs.records.gangs.
   start_gang`: one attempt, as a one-worker claim counts), the others wait to see it running.
   A gang that breaks before that (a member gave up waiting just as it met, or died) starts
   no attempt: each member left frees its slot and sends its message again, as at the
   deadline, so that a queued run always has one message per free slot.
4. **Train.** :mod:`worker.gang_member` in a fresh interpreter (one multi-worker run per
   process). Meanwhile this process beats its slot (and the chief's beats the run) and checks
   the gang every ``heartbeat_seconds / 2``:

   - a cancel: every member kills its process; the chief records the run ``cancelled``;
   - a slot left, claimed again or stale, or a member's process failed: the gang stops — every
     survivor kills its process, and one of them (or a sweeper: :func:`jobs.records.gangs.
     broken_gangs`) puts the run back to ``queued`` with all slots free and sends the N
     messages again (:func:`jobs.records.gangs.requeue_gang`; out of attempts: ``failed``).
     The next gang resumes from the chief's last checkpoint;
   - this slot taken from us, or the run no longer in our attempt: stop, record nothing.

   A non-chief whose process ended well keeps its slot until the chief has recorded the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from jobs.records import RecordNotFound, RunStatus, session_scope
from jobs.records.gangs import (
    Gang,
    broken_why,
    leave_unstarted,
    met_gang,
    requeue_gang,
    start_gang,
)
from jobs.records.lifecycle import RUN_JOBS, ReclaimOutcome
from jobs.records.runs import finish_run
from jobs.records.slots import (
    SlotClaim,
    beat_slot,
    claim_slot,
    read_cluster,
    release_slot,
    release_slots,
    release_stale_slots,
)
from jobs.settings import Settings
from worker.runtime import describe_error, worker_name

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
KILL_WAIT_S = 30.0


def collective_host(settings: Settings) -> str:
    """Where the run's other workers reach this one (``RESNET_COLLECTIVE_HOST``)."""
    name = settings.collective_host
    if name == "ip":  # a container: /etc/hosts maps its name to its address on the network
        return socket.gethostbyname(socket.gethostname())
    return name or socket.gethostname()


def free_port() -> int:
    """A TCP port free on this machine now (the member binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


class GangSlot:
    """This worker's slot of one run, from claim to the end of its part in an attempt."""

    def __init__(
        self,
        claim: SlotClaim,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        send: Callable[[str, int], object],
    ) -> None:
        self.claim = claim
        self.run_id = claim.run_id
        self.settings = settings
        self.sessions = sessions
        self.send = send  # (run id, how many messages)
        self.tick_s = settings.heartbeat_seconds / 2
        self.stale_s = settings.stale_after_seconds

    # --- 2. the gang meets -------------------------------------------------------------------

    def wait_for_gang(self) -> tuple[Gang, tuple[str, ...]] | None:
        """Beat the slot until the gang is complete; ``None`` once the deadline passed (the
        slot is freed and the message sent again, unless the gang started with this slot just
        then: it is returned, to join), the slot was lost, or the run ended (cancelled while
        it waited: the slot is freed)."""
        deadline = time.monotonic() + self.settings.gang_wait_seconds
        while True:
            with session_scope(self.sessions) as session:
                if not beat_slot(session, self.claim):
                    log.warning("run %s: slot %d was freed while waiting", self.run_id, self.slot)
                    return None
                # Dead peers first: a slot whose worker stopped beating is no member of the
                # gang (met with it, the gang would stop at once, an attempt spent).
                released = release_stale_slots(
                    session, stale_after_s=self.stale_s, run_id=self.run_id
                )
                gang, cluster = met_gang(session, self.run_id), read_cluster(session, self.run_id)
                if gang is not None and cluster is not None:
                    return gang, cluster
                ended = RUN_JOBS.get(session, self.run_id).status.terminal
            if released:  # their waiting workers died with the messages: send those again
                log.warning("run %s: freed %d stale slot(s)", self.run_id, len(released))
                self.send(self.run_id, len(released))
            if ended:
                log.info("run %s ended while slot %d waited: slot freed", self.run_id, self.slot)
                self._leave()
                return None
            if time.monotonic() > deadline:
                if self._leave_waiting() is not None:  # the gang started with this slot
                    return self._joined()  # meanwhile: start() finds it running and joins
                log.info(
                    "run %s: the gang did not meet within %.0f s: slot %d freed; the run waits",
                    self.run_id, self.settings.gang_wait_seconds, self.slot,
                )  # fmt: skip
                return None
            time.sleep(self.tick_s)

    def _joined(self) -> tuple[Gang, tuple[str, ...]] | None:
        """The gang that started with this slot as it gave up waiting, read afresh; if it is
        no longer whole (a peer left since), this slot is freed too (the requeue that follows
        sends the run's messages) and ``None`` returned, rather than looking again and again."""
        with session_scope(self.sessions) as session:
            gang, cluster = met_gang(session, self.run_id), read_cluster(session, self.run_id)
        if gang is not None and cluster is not None:
            return gang, cluster
        self._leave()
        return None

    def _leave_waiting(self) -> int | None:
        """Free this slot and, if the run still waits for its gang, send its message again;
        unless the gang started with this slot meanwhile: then the attempt to join.

        The message this delivery took stands for the slot: a queued run needs one per free
        slot, or its gang never meets again (the broker still holds the others, so the
        lost-message sweep sends nothing).
        """
        with session_scope(self.sessions) as session:
            outcome = leave_unstarted(session, self.claim)
            run = RUN_JOBS.get(session, self.run_id)
            queued, attempt = run.status == RunStatus.QUEUED, run.attempts
        if outcome == "joined":
            log.info("run %s: the gang started as slot %d gave up: it joins", self.run_id,
                     self.slot)  # fmt: skip
            return attempt
        if outcome == "freed" and queued:
            self.send(self.run_id, 1)
        return None

    # --- 3. the attempt starts -------------------------------------------------------------

    def start(self, gang: Gang, cluster: tuple[str, ...]) -> int | None:
        """The run's attempt this gang trains in, or ``None``: the gang broke before it started
        (this slot is then freed and, if the run still waits, its message sent again), or the
        run is over."""
        if self.claim.chief:
            with session_scope(self.sessions) as session:
                try:
                    plan = _plan(RUN_JOBS.get(session, self.run_id).config, cluster)
                except ValueError as exc:  # a config no gang can train: no point in waiting
                    RUN_JOBS.fail_unsent(session, self.run_id, describe_error(exc))
                    release_slots(session, self.run_id)
                    return None
                attempt = start_gang(session, gang, worker_host=worker_name(), distribution=plan)
            return attempt if attempt is not None else self._leave_waiting()
        deadline = time.monotonic() + self.settings.gang_wait_seconds
        while time.monotonic() < deadline:
            with session_scope(self.sessions) as session:
                run = RUN_JOBS.get(session, self.run_id)
                alive = beat_slot(session, self.claim)
                if run.status == RunStatus.RUNNING and alive:
                    return run.attempts
                if (
                    not alive
                    or run.status != RunStatus.QUEUED
                    or broken_why(session, gang, stale_after_s=self.stale_s)
                ):
                    break
            time.sleep(self.tick_s)
        return self._leave_waiting()  # the attempt, if the chief started it just now

    @property
    def slot(self) -> int:
        return self.claim.slot

    # --- 4. training, watched -------------------------------------------------------------

    def train(self, gang: Gang, cluster: tuple[str, ...], attempt: int) -> str:
        """Run the member process and watch the gang until this slot's part ends."""
        folder = self.settings.state_dir.resolve() / "replicas" / self.run_id
        scratch = folder / f"slot{self.slot}"
        result_file = folder / f"slot{self.slot}.error"
        folder.mkdir(parents=True, exist_ok=True)
        result_file.unlink(missing_ok=True)
        spec = {
            "run_id": self.run_id,
            "slot": self.slot,
            "cluster": list(cluster),
            "attempt": attempt,
            "scratch_dir": str(scratch),
            "result_file": str(result_file),
        }
        log.info("run %s: attempt %d, slot %d of %s", self.run_id, attempt, self.slot, cluster)
        member = subprocess.Popen(
            [sys.executable, "-m", "worker.gang_member", json.dumps(spec)], cwd=ROOT
        )
        try:
            outcome = self._watch(member, gang, attempt, result_file)
        finally:
            _stop(member)
        if not self.settings.keep_replica_dirs and outcome != "requeued":
            shutil.rmtree(scratch, ignore_errors=True)
        return outcome

    def _watch(
        self, member: subprocess.Popen[bytes], gang: Gang, attempt: int, result_file: Path
    ) -> str:
        chief = self.claim.chief
        while True:
            time.sleep(self.tick_s)
            code = member.poll()
            try:
                with session_scope(self.sessions) as session:
                    # The run's row before the slot's, as requeue_gang and leave_unstarted
                    # take them: in the other order the two could deadlock on PostgreSQL.
                    if chief:
                        RUN_JOBS.beat(session, self.run_id, attempt=attempt)
                    mine = beat_slot(session, self.claim)
                    run = RUN_JOBS.get(session, self.run_id)
                    ours = run.status == RunStatus.RUNNING and run.attempts == attempt
                    cancel = run.cancel_requested
                    broken = broken_why(session, gang, stale_after_s=self.stale_s)
            except Exception as exc:  # the database away for a moment: the next tick may do
                log.warning("run %s: gang check failed: %s", self.run_id, describe_error(exc))
                continue
            if not ours:  # first: the chief's cancel or finish frees every slot, this one too
                self._leave()
                return run.status.value if run.status.terminal else "lost"
            if not mine:
                log.warning("run %s: slot %d was taken from this worker", self.run_id, self.slot)
                return "lost"
            if cancel:
                return self._cancel(member, attempt)
            if code is not None and code != 0:
                error = _read(result_file) or f"its process ended with code {code}"
                return self._requeue(attempt, f"the worker of slot {self.slot} failed: {error}")
            if broken is not None:
                return self._requeue(attempt, broken)
            if code == 0 and chief:  # the member recorded the run's outcome
                with session_scope(self.sessions) as session:
                    release_slots(session, self.run_id)
                    status = RUN_JOBS.get(session, self.run_id).status
                return status.value
            # A non-chief whose process ended well waits here for the chief to record the run.

    def _leave(self) -> None:
        with session_scope(self.sessions) as session:
            release_slot(session, self.claim)

    def _cancel(self, member: subprocess.Popen[bytes], attempt: int) -> str:
        _stop(member)
        if not self.claim.chief:
            self._leave()
            return "cancelled"
        epochs = 0
        with session_scope(self.sessions) as session:
            epochs = RUN_JOBS.get(session, self.run_id).epochs_completed
            finish_run(
                session,
                self.run_id,
                status=RunStatus.CANCELLED,
                error=f"cancelled on request after {epochs} epoch(s)",
                attempt=attempt,
            )
            release_slots(session, self.run_id)
        log.info("run %s: cancelled; every slot stopped", self.run_id)
        return "cancelled"

    def _requeue(self, attempt: int, why: str) -> str:
        with session_scope(self.sessions) as session:
            outcome = requeue_gang(session, self.run_id, attempt=attempt, why=why)
            workers = RUN_JOBS.get(session, self.run_id).workers
        log.warning("run %s: attempt %d stopped (%s): %s", self.run_id, attempt, why, outcome.value)
        if outcome is ReclaimOutcome.REQUEUED:
            self.send(self.run_id, workers)
        elif outcome is ReclaimOutcome.NOT_STALE:  # another member or a sweeper was first
            self._leave()
        return "requeued"


def run_gang_slot(
    run_id: str,
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    send: Callable[[str, int], object],
) -> str:
    """Handle one delivery of a multi-worker run's task (see the module's docstring).

    Args:
        send: Sends the run's task again, that many times (after a commit).

    Returns:
        What happened: ``skipped`` (no free slot), ``waiting`` (the gang did not meet, or
        broke before it started), ``succeeded``, ``cancelled``, ``failed``, ``requeued``
        (the gang broke and the run waits again) or ``lost``.
    """
    host = collective_host(settings)
    port = settings.collective_port or free_port()
    try:
        with session_scope(sessions) as session:
            claim = claim_slot(session, run_id, worker_host=host, port=port)
    except RecordNotFound:
        log.info("run %s: no such run (deleted?); nothing to do", run_id)
        return "skipped"
    if claim is None:
        log.info("run %s: no free slot (the gang is complete, or the run is not queued)", run_id)
        return "skipped"
    log.info("run %s: slot %d at %s:%d", run_id, claim.slot, host, port)
    slot = GangSlot(claim, settings=settings, sessions=sessions, send=send)
    met = slot.wait_for_gang()
    if met is None:
        return "waiting"
    gang, cluster = met
    attempt = slot.start(gang, cluster)
    if attempt is None:
        log.info("run %s: the gang broke before it started", run_id)
        return "waiting"
    return slot.train(gang, cluster, attempt)


def _plan(config: dict[str, Any], cluster: tuple[str, ...]) -> dict[str, Any]:
    """The plan the gang will train by, to record with the run (one replica per worker: one
    worker per accelerator; the member writes the one it trained by as distribution.json)."""
    from core.training.config import TrainConfig
    from core.training.distribution_plan import plan_distribution

    trained = TrainConfig.model_validate(config)
    _, plan = plan_distribution(trained, workers=list(cluster), num_replicas=len(cluster))
    return plan.to_dict()


def _stop(member: subprocess.Popen[bytes]) -> None:
    """Kill the member at once: one stuck at an all-reduce does not stop any other way."""
    if member.poll() is None:
        member.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            member.wait(timeout=KILL_WAIT_S)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
