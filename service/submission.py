"""Submitting jobs to the workers: one way for runs, experiments, evaluations and batch
predictions.

Jobs are recorded as ``queued`` in one transaction and their tasks sent only after it commits,
so a worker always finds the row its message names. If the broker does not take a message, the
jobs not yet sent are marked ``failed`` with ``could not enqueue: …`` and the request answers
503 (``queue_unavailable``, with ``Retry-After``): nothing sits queued forever with no message
behind it, and the record says what happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends
from sqlalchemy.orm import Session

from core.data.types import UNLABELLED_KIND, UNLABELLED_SPLIT
from jobs.records import Evaluation, Run, RunStatus
from jobs.records import repository as records
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS
from service.data import registered_dataset, source_of
from service.deps import QueueDep, SessionDep, SettingsDep, committed
from service.errors import ApiError, ErrorDetail, invalid
from service.queue import TaskQueue

RETRY_AFTER_S = 30

Recorded = TypeVar("Recorded")


@dataclass(frozen=True)
class JobKind:
    """How to send a kind of job, and how to fail one whose message was not sent."""

    send: Callable[[TaskQueue, str], None]
    fail_unsent: Callable[[Session, str, str], bool]


RUN = JobKind(
    send=lambda queue, run_id: queue.enqueue_run(run_id), fail_unsent=RUN_JOBS.fail_unsent
)
EVALUATION = JobKind(
    send=lambda queue, evaluation_id: queue.enqueue_evaluation(evaluation_id),
    fail_unsent=EVALUATION_JOBS.fail_unsent,
)


def submit(
    session: Session,
    queue: TaskQueue,
    kind: JobKind,
    record: Callable[[], Recorded],
    *,
    job_ids: Callable[[Recorded], Sequence[str]],
    describe: Callable[[Recorded, int], str],
) -> Recorded:
    """Record jobs in one transaction, then send them in order.

    Args:
        session: The request's session; ``record`` writes into it and this commits.
        queue: Where the tasks go.
        kind: Which task to send and how to fail an unsent job.
        record: Adds the rows (uncommitted) and returns what the route answers with.
        job_ids: The ids of the jobs ``record`` added, in the order to send them.
        describe: What was recorded, for the 503 message, given how many jobs went unsent
            (``"Run <id>"``, ``"Experiment <id> (3 of 5 runs)"``).

    Raises:
        ApiError: 503 ``queue_unavailable`` once the broker refuses a message; that job and
            the ones after it are marked failed first.
    """
    with committed(session):
        recorded = record()
    ids = list(job_ids(recorded))
    for sent, job_id in enumerate(ids):
        try:
            kind.send(queue, job_id)
        except Exception as exc:  # EnqueueError, or anything else: not sent either way
            with committed(session):
                for unsent in ids[sent:]:
                    kind.fail_unsent(session, unsent, f"could not enqueue: {exc}")
            raise queue_unavailable(describe(recorded, len(ids) - sent), exc) from None
    return recorded


def submit_evaluation(
    session: Session,
    queue: TaskQueue,
    run: Run,
    *,
    split: str | None,
    dataset_ref: str | None,
    max_attempts: int,
) -> Evaluation:
    """Record and send an evaluation of a succeeded run's model (a batch prediction too).

    Args:
        split: ``train``, ``val`` or ``test`` (None: ``test``); an unlabelled dataset has no
            splits (None: recorded as ``all``, every file).
        dataset_ref: A registered dataset's name or id (422 on ``body.dataset`` if unknown);
            None: the run's own data.
        max_attempts: The service's ``RESNET_MAX_ATTEMPTS``, as runs get it.

    Raises:
        ApiError: 409 unless the run succeeded; 422 as above, and on ``body.split`` when one
            is named for unlabelled images; 503 as :func:`submit`.
    """
    if run.status != RunStatus.SUCCEEDED:
        raise ApiError(
            409, f"Run {run.id} is {run.status.value}: only a succeeded run has a model to evaluate"
        )
    source = None
    if dataset_ref is not None:
        dataset = registered_dataset(session, dataset_ref, field="body.dataset")
        source = source_of(dataset)
        if dataset.kind == UNLABELLED_KIND:
            if split is not None:
                raise invalid(
                    "body.split",
                    f"dataset {dataset.name!r} holds unlabelled images (kind "
                    f"{UNLABELLED_KIND!r}): it has no splits, every file is predicted; "
                    "leave 'split' out",
                    split,
                )
            split = UNLABELLED_SPLIT
    recorded_split = split or "test"
    return submit(
        session,
        queue,
        EVALUATION,
        lambda: records.create_evaluation(
            session,
            run_id=run.id,
            split=recorded_split,
            dataset=source,
            max_attempts=max_attempts,
        ),
        job_ids=lambda evaluation: [evaluation.id],
        describe=lambda evaluation, _: f"Evaluation {evaluation.id}",
    )


def queue_unavailable(what: str, exc: Exception) -> ApiError:
    return ApiError(
        503,
        f"{what} was recorded but could not be queued, so it is marked failed "
        f"('could not enqueue'); the broker is unreachable. Try again later.",
        code="queue_unavailable",
        details=[ErrorDetail(field=None, message=f"could not enqueue: {exc}")],
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class Submitter:
    """A request's way to submit jobs (a dependency): its session, its queue and the service's
    settings (``RESNET_MAX_ATTEMPTS``), so routes name what to submit and nothing else."""

    def __init__(self, session: SessionDep, queue: QueueDep, settings: SettingsDep) -> None:
        self.session, self.queue, self.settings = session, queue, settings

    def evaluation(self, run: Run, *, split: str | None, dataset_ref: str | None) -> Evaluation:
        """:func:`submit_evaluation` of ``run``'s model (a batch prediction too)."""
        return submit_evaluation(
            self.session,
            self.queue,
            run,
            split=split,
            dataset_ref=dataset_ref,
            max_attempts=self.settings.max_attempts,
        )


SubmitterDep = Annotated[Submitter, Depends()]
