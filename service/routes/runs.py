"""``/v1/runs``: queue training runs, follow them, cancel, delete, and evaluate them.

A run's config is resolved by :mod:`service.run_configs` and the run submitted by
:mod:`service.submission` (committed as ``queued``, then sent; 503 if the broker refuses).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Annotated

from fastapi import Query, Request, Response

from jobs.records import RecordNotFound, Run, RunStatus
from jobs.records import repository as records
from jobs.records.datasets import find_dataset
from jobs.records.run_files import free_run_files
from service.data import source_of
from service.deps import QueueDep, ReadKey, SessionDep, SettingsDep, TrainKey, committed
from service.owners import QUOTA_ERRORS, check_stored_bytes, hold_run_quota, require_owner
from service.routes import Limit, Offset, error_responses, keyed_router
from service.run_configs import record_run, resolve_run_config
from service.schemas import (
    EpochPublic,
    EpochsPublic,
    EvaluationCreate,
    EvaluationPublic,
    EvaluationsPublic,
    RunCreate,
    RunPublic,
    RunsPublic,
)
from service.submission import RUN, SubmitterDep, submit

router = keyed_router(prefix="/v1/runs", tag="runs")


@router.post(
    "",
    status_code=202,
    summary="Queue a training run",
    responses={**error_responses(503), **QUOTA_ERRORS},
)
def create_run(
    body: RunCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    key: TrainKey,
) -> RunPublic:
    """Validate the config (architecture, data, preset, hyperparameters), record the run as
    ``queued`` and send it to the workers. Invalid input is a 422 naming the field; a key
    over its quota of active runs gets 429 (with ``Retry-After``), of stored bytes 507."""
    resolved = resolve_run_config(session, body, settings=settings)
    check_stored_bytes(session, settings, key)

    def record() -> Run:
        hold_run_quota(session, settings, key, adding=1)
        return record_run(session, resolved, api_key_id=key.id, max_attempts=settings.max_attempts)

    run = submit(
        session,
        queue,
        RUN,
        record,
        job_ids=lambda run: [run.id] * run.workers,  # one message per slot of a gang
        describe=lambda run, _: f"Run {run.id}",
    )
    response.headers["Location"] = f"{router.prefix}/{run.id}"
    return RunPublic.from_row(run)


@router.get(
    "",
    summary="List runs, newest first",
)
def list_runs(
    session: SessionDep,
    key: ReadKey,
    status: RunStatus | None = None,
    architecture: str | None = None,
    dataset: Annotated[
        str | None, Query(description="A registered dataset's name or id, or a KIND:PATH source")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> RunsPublic:
    if dataset is not None:
        with suppress(RecordNotFound):  # else a data source, matched as it is
            dataset = source_of(find_dataset(session, dataset))
    runs, total = records.list_runs(
        session,
        status=status,
        architecture=architecture.strip().lower() if architecture else None,
        dataset=dataset,
        limit=limit,
        offset=offset,
    )
    return RunsPublic(
        items=[RunPublic.from_row(r) for r in runs], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{run_id}",
    summary="A run: status, progress within the epoch, ETA, attempts, error, metrics",
    responses=error_responses(404),
)
def get_run(run_id: str, session: SessionDep, key: ReadKey) -> RunPublic:
    return RunPublic.from_row(records.get_run(session, run_id))


@router.get(
    "/{run_id}/epochs",
    summary="A run's finished epochs: losses, accuracies, learning rate, speed",
    responses=error_responses(404),
)
def list_epochs(run_id: str, session: SessionDep, key: ReadKey) -> EpochsPublic:
    records.get_run(session, run_id)
    epochs = records.list_epochs(session, run_id)
    return EpochsPublic(run_id=run_id, items=[EpochPublic.model_validate(e) for e in epochs])


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    summary="Cancel a run (its owner's key or an admin key)",
    responses=error_responses(404, 409),
)
def cancel_run(run_id: str, session: SessionDep, key: TrainKey) -> RunPublic:
    """A queued run is cancelled at once; a running one gets ``cancel_requested`` and its
    worker stops it within a few batches. A run that already succeeded or failed: 409.
    Another key's run: 403, unless this is an admin key."""
    require_owner(session, key, records.get_run(session, run_id), f"Run {run_id}")
    with committed(session):
        run = records.request_cancel(session, run_id)
    return RunPublic.from_row(run)


@router.delete(
    "/{run_id}",
    status_code=204,
    summary="Delete a run, its records and its files (refused while it runs or backs a model)",
    responses=error_responses(404, 409),
)
def delete_run(
    run_id: str, request: Request, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> Response:
    """Deletes the run's epochs, evaluations and artifact records, then its folder (model,
    checkpoints, stored predictions). A running run: 409 (cancel it first); a run that model
    versions were promoted from: 409 naming them (delete them first). Another key's run: 403,
    unless this is an admin key."""
    require_owner(session, key, records.get_run(session, run_id), f"Run {run_id}")
    with committed(session):
        records.delete_run(session, run_id)
    free_run_files(settings, run_id)
    inference = getattr(request.app.state, "inference", None)
    if inference is not None:
        inference.refs.clear()  # its id no longer names a model, in this process at once
    return Response(status_code=204)


@router.post(
    "/{run_id}/evaluations",
    status_code=202,
    summary="Queue an evaluation of a succeeded run on a split",
    responses=error_responses(404, 409, 503),
)
def create_evaluation(
    run_id: str,
    body: EvaluationCreate,
    session: SessionDep,
    submitter: SubmitterDep,
    key: TrainKey,
) -> EvaluationPublic:
    run = records.get_run(session, run_id)
    evaluation = submitter.evaluation(run, split=body.split, dataset_ref=body.dataset)
    return EvaluationPublic.model_validate(evaluation)


@router.get(
    "/{run_id}/evaluations",
    summary="A run's evaluations, oldest first",
    responses=error_responses(404),
)
def list_evaluations(run_id: str, session: SessionDep, key: ReadKey) -> EvaluationsPublic:
    records.get_run(session, run_id)
    items = records.list_evaluations(session, run_id)
    return EvaluationsPublic(
        run_id=run_id, items=[EvaluationPublic.model_validate(e) for e in items]
    )


@router.get(
    "/{run_id}/evaluations/{evaluation_id}",
    summary="One evaluation: accuracy, precision, recall, F1, the confusion matrix",
    responses=error_responses(404),
)
def get_evaluation(
    run_id: str, evaluation_id: str, session: SessionDep, key: ReadKey
) -> EvaluationPublic:
    evaluation = records.get_evaluation(session, evaluation_id)
    if evaluation.run_id != run_id:
        raise RecordNotFound("Evaluation", evaluation_id)
    return EvaluationPublic.model_validate(evaluation)
