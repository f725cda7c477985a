"""``/v1/runs``: queue training runs, follow them, cancel, delete, and evaluate them.

A run is committed as ``queued`` first and its task sent afterwards, so a worker always finds
the row its message names. If the broker does not take the message the run is marked ``failed``
with ``could not enqueue: …`` and the request answers 503: nothing sits queued forever with no
message behind it, and the record says what happened.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.models.specs import CATALOGUE_NAMES, parse_architecture
from core.training.config import PRESETS, TrainConfig, make_config
from jobs.records import Evaluation, RecordNotFound, Run, RunStatus
from jobs.records import repository as records
from service.data import check_run_data, not_found_dataset
from service.deps import QueueDep, ReadKey, SessionDep, SettingsDep, TrainKey, committed
from service.errors import ApiError, ErrorDetail, from_pydantic, invalid
from service.queue import EnqueueError, TaskQueue
from service.records import fail_unqueued_evaluation, fail_unqueued_run, find_dataset
from service.routes import AUTH_ERRORS, Limit, Offset, error_responses
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

router = APIRouter(
    prefix="/v1/runs",
    tags=["runs"],
    # Every route needs a key; any with parameters may answer 422 in the error shape.
    responses=error_responses(*AUTH_ERRORS, 422),
)

RETRY_AFTER_S = 30


@router.post(
    "",
    status_code=202,
    summary="Queue a training run",
    responses=error_responses(503),
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
    ``queued`` and send it to the workers. Invalid input is a 422 naming the field."""
    config, dataset_id = validated_config(session, body)
    with committed(session):
        run = records.create_run(
            session,
            architecture=config.architecture,
            dataset=config.data,
            config=config.model_dump(mode="json"),
            api_key_id=key.id,
            max_attempts=settings.max_attempts,
            dataset_id=dataset_id,
        )
    try:
        queue.enqueue_run(run.id)
    except EnqueueError as exc:
        with committed(session):
            fail_unqueued_run(session, run.id, f"could not enqueue: {exc}")
        raise queue_unavailable(f"Run {run.id}", exc) from None
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
        try:
            row = find_dataset(session, dataset)
            dataset = f"{row.kind}:{row.location}"
        except RecordNotFound:
            pass  # a source spec, matched as it is
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
    summary="Cancel a run",
    responses=error_responses(404, 409),
)
def cancel_run(run_id: str, session: SessionDep, key: TrainKey) -> RunPublic:
    """A queued run is cancelled at once; a running one gets ``cancel_requested`` and its
    worker stops it within a few batches. A run that already succeeded or failed: 409."""
    with committed(session):
        run = records.request_cancel(session, run_id)
    return RunPublic.from_row(run)


@router.delete(
    "/{run_id}",
    status_code=204,
    summary="Delete a run and its records (refused while it runs)",
    responses=error_responses(404, 409),
)
def delete_run(run_id: str, session: SessionDep, key: TrainKey) -> Response:
    with committed(session):
        records.delete_run(session, run_id)
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
    queue: QueueDep,
    key: TrainKey,
) -> EvaluationPublic:
    run = records.get_run(session, run_id)
    evaluation = queue_evaluation(session, queue, run, split=body.split, dataset=body.dataset)
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


# --- helpers ---------------------------------------------------------------------------------


def validated_config(session: Session, body: RunCreate) -> tuple[TrainConfig, str | None]:
    """The run's full config, and the registered dataset it trains on (if any).

    Raises:
        ApiError: 422 naming the offending field (``body.architecture``, ``body.preset``,
            ``body.dataset``, ``body.data``, ``body.batch_size``, ``body.optimizer.momentum``…).
    """
    overrides = body.model_dump(exclude_unset=True)
    architecture: str = overrides.pop("architecture")
    dataset_ref: str | None = overrides.pop("dataset", None)
    data: str | None = overrides.pop("data", None)
    preset: str | None = overrides.pop("preset", None)
    try:
        parse_architecture(architecture)
    except ValueError as exc:
        message = str(exc)
        if "Expected one of" not in message:  # e.g. a depth no ResNet has: list the names too
            message += f" Expected one of {', '.join(CATALOGUE_NAMES)}, or another valid depth."
        raise invalid("body.architecture", message, architecture) from None
    if preset is not None and preset not in PRESETS:
        raise invalid(
            "body.preset",
            f"Unknown preset: {preset!r}. Expected one of {', '.join(PRESETS)}",
            preset,
        )
    if (dataset_ref is None) == (data is None):
        raise invalid(
            "body.dataset",
            "name the data with either 'dataset' (a registered dataset's name or id) or 'data' "
            "(a source without a path), not both",
            dataset_ref,
        )
    dataset_id: str | None = None
    if dataset_ref is not None:
        try:
            row = find_dataset(session, dataset_ref)
        except RecordNotFound:
            raise not_found_dataset("body.dataset", dataset_ref) from None
        source, dataset_id = f"{row.kind}:{row.location}", row.id
    else:
        assert data is not None
        source = check_run_data(data)
    try:
        config = make_config(architecture, source, preset=preset, **overrides)
    except ValidationError as exc:
        raise from_pydantic(exc) from None
    except ValueError as exc:
        raise invalid("body", str(exc)) from None
    return config, dataset_id


def queue_evaluation(
    session: Session, queue: TaskQueue, run: Run, *, split: str, dataset: str | None
) -> Evaluation:
    """Record and enqueue an evaluation of a succeeded run's model (a batch prediction too).

    ``dataset``: a registered dataset's name or id (422 if unknown); None: the run's own data.
    """
    if run.status != RunStatus.SUCCEEDED:
        raise ApiError(
            409, f"Run {run.id} is {run.status.value}: only a succeeded run has a model to evaluate"
        )
    source: str | None = None
    if dataset is not None:
        try:
            row = find_dataset(session, dataset)
        except RecordNotFound:
            raise not_found_dataset("body.dataset", dataset) from None
        source = f"{row.kind}:{row.location}"
    with committed(session):
        evaluation = records.create_evaluation(session, run_id=run.id, split=split, dataset=source)
    send_evaluation(session, queue, evaluation.id)
    return evaluation


def send_evaluation(session: Session, queue: TaskQueue, evaluation_id: str) -> None:
    try:
        queue.enqueue_evaluation(evaluation_id)
    except EnqueueError as exc:
        with committed(session):
            fail_unqueued_evaluation(session, evaluation_id, f"could not enqueue: {exc}")
        raise queue_unavailable(f"Evaluation {evaluation_id}", exc) from None


def queue_unavailable(what: str, exc: Exception) -> ApiError:
    return ApiError(
        503,
        f"{what} was recorded but could not be queued, so it is marked failed "
        f"('could not enqueue'); the broker is unreachable. Try again later.",
        code="queue_unavailable",
        details=[ErrorDetail(field=None, message=f"could not enqueue: {exc}")],
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
