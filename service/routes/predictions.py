"""Batch predictions, and the predictions every evaluation keeps.

- ``POST /v1/models/{name}[/versions/{version}]/batch-predictions`` ``{"dataset", "split"}``:
  a worker predicts every image of a split of a registered dataset (default: the run's own
  data) with that model version. It is an evaluation of the version's run: it is followed, and
  its metrics read, at ``/v1/runs/{run_id}/evaluations/{id}`` (the ``Location`` header).
- ``GET /v1/runs/{run_id}/evaluations/{id}/predictions``: what the model said about each image
  — a page of JSON rows, the whole split as CSV, or the ``.npz`` archive of
  :class:`core.evaluation.Predictions` (probabilities, labels, class names, image ids).
  A batch prediction of unlabelled images (a dataset of kind ``images``) has a row per file of
  the folder, by its relative path: no label, no metrics, and an ``error`` on the rows of
  files that could not be read (NaN probabilities in the ``.npz``, an ``errors`` array beside).
- ``POST /v1/runs/{run_id}/evaluations/{id}/rescore`` ``{"threshold"}``: the evaluation's
  metrics recomputed from the stored predictions (another multi-label threshold), no model
  and no worker needed.

Batch predictions need the ``predict`` scope, reading and rescoring ``read``. Nothing here
imports TensorFlow (predictions are numpy; a URL artifact root is read through jobs.storage).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from core.evaluation import Predictions, PredictionsError
from jobs.ids import is_record_id
from jobs.records import ApiKey, EvaluationStatus, RecordNotFound, Run, Scope
from jobs.records import repository as records
from jobs.records.models import Evaluation
from jobs.storage import read_bytes
from service.deps import ReadKey, SessionDep, require
from service.errors import ApiError
from service.inference.payload import MAX_TOP_K
from service.routes import AUTH_ERRORS, MAX_OFFSET, MAX_PAGE, error_responses
from service.schemas import BatchPredictionCreate, EvaluationPublic
from service.schemas.models import VersionPath
from service.schemas.predictions import PredictionRow, PredictionsPage, Rescore, RescorePublic
from service.submission import Submitter, SubmitterDep

router = APIRouter(tags=["models"], responses=error_responses(*AUTH_ERRORS, 422))

PredictKey = Annotated[ApiKey, Depends(require(Scope.PREDICT))]


# --- batch predictions -----------------------------------------------------------------------


@router.post(
    "/v1/models/{name}/batch-predictions",
    status_code=202,
    summary="Predict a whole dataset split with the newest version of a model (on a worker)",
    responses=error_responses(404, 409, 503),
)
def batch_predict(
    name: str,
    body: BatchPredictionCreate,
    response: Response,
    session: SessionDep,
    submitter: SubmitterDep,
    key: PredictKey,
) -> EvaluationPublic:
    return _queue(submitter, response, _model_run(session, name, None), body)


@router.post(
    "/v1/models/{name}/versions/{version}/batch-predictions",
    status_code=202,
    summary="Predict a whole dataset split with one version of a model (on a worker)",
    responses=error_responses(404, 409, 503),
)
def batch_predict_version(
    name: str,
    version: VersionPath,
    body: BatchPredictionCreate,
    response: Response,
    session: SessionDep,
    submitter: SubmitterDep,
    key: PredictKey,
) -> EvaluationPublic:
    return _queue(submitter, response, _model_run(session, name, version), body)


def _model_run(session: Session, name: str, version: int | None) -> Run:
    """The run behind a model version (``name`` may also be a succeeded run's id)."""
    try:
        return records.get_model_version(session, name, version).run
    except RecordNotFound:
        run = session.get(Run, name) if version is None and is_record_id(name) else None
        if run is None:
            raise
        return run


def _queue(
    submitter: Submitter, response: Response, run: Run, body: BatchPredictionCreate
) -> EvaluationPublic:
    evaluation = submitter.evaluation(run, split=body.split, dataset_ref=body.dataset)
    response.headers["Location"] = f"/v1/runs/{run.id}/evaluations/{evaluation.id}"
    return EvaluationPublic.model_validate(evaluation)


# --- stored predictions ----------------------------------------------------------------------

_BASE = "/v1/runs/{run_id}/evaluations/{evaluation_id}"


@router.get(
    f"{_BASE}/predictions",
    tags=["runs"],
    summary="An evaluation's predictions: JSON pages, the whole split as CSV, or the .npz",
    responses={
        **error_responses(404, 409),
        200: {
            "content": {
                "application/json": {"schema": PredictionsPage.model_json_schema()},
                "text/csv": {"schema": {"type": "string"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        },
    },
    response_model=None,
)
def get_predictions(
    run_id: str,
    evaluation_id: str,
    session: SessionDep,
    key: ReadKey,
    format: Annotated[
        Literal["json", "csv", "npz"], Query(description="json: a page of rows")
    ] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="json: rows per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="json: rows to skip")] = 0,
    top_k: Annotated[
        int, Query(ge=1, le=MAX_TOP_K, description="json, single-label: labels per image")
    ] = 5,
    threshold: Annotated[
        float, Query(ge=0.0, le=1.0, description="json, multi-label: the cut")
    ] = 0.5,
) -> Response:
    evaluation = _succeeded(session, run_id, evaluation_id)
    data = _read(evaluation)
    filename = f"predictions-{evaluation_id}"
    if format == "npz":
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}.npz"'},
        )
    predictions = _load(data, evaluation_id)
    if format == "csv":
        return StreamingResponse(
            _chunks(predictions.csv_lines()),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )
    k = min(top_k, len(predictions.class_names))
    page = predictions.rows(top_k=k, threshold=threshold, start=offset, stop=offset + limit)
    body = PredictionsPage(
        evaluation_id=evaluation_id,
        run_id=run_id,
        count=len(predictions),
        class_names=predictions.class_names,
        multi_label=predictions.multi_label,
        labelled=predictions.labelled,
        offset=offset,
        limit=limit,
        next_offset=offset + limit if offset + limit < len(predictions) else None,
        items=[PredictionRow.model_validate(row) for row in page],
    )
    if not predictions.labelled:
        body.unreadable = predictions.unreadable
    # Unset fields stay out: an unlabelled row has no "label" key, a labelled one no "error".
    return Response(body.model_dump_json(exclude_unset=True), media_type="application/json")


@router.post(
    f"{_BASE}/rescore",
    tags=["runs"],
    summary="Recompute an evaluation's metrics from its stored predictions",
    responses=error_responses(404, 409),
)
def rescore(
    run_id: str, evaluation_id: str, body: Rescore, session: SessionDep, key: ReadKey
) -> RescorePublic:
    evaluation = _succeeded(session, run_id, evaluation_id)
    predictions = _load(_read(evaluation), evaluation_id)
    if not predictions.labelled:
        raise ApiError(
            409,
            f"Evaluation {evaluation_id} predicted unlabelled images: there are no labels to "
            "score its predictions against",
        )
    return RescorePublic(
        evaluation_id=evaluation_id,
        threshold=body.threshold,
        metrics=predictions.score(threshold=body.threshold),
    )


def _succeeded(session: Session, run_id: str, evaluation_id: str) -> Evaluation:
    evaluation = records.get_evaluation(session, evaluation_id)
    if evaluation.run_id != run_id:
        raise RecordNotFound("Evaluation", evaluation_id)
    if evaluation.status != EvaluationStatus.SUCCEEDED:
        raise ApiError(
            409,
            f"Evaluation {evaluation_id} is {evaluation.status.value}: "
            "predictions exist once it has succeeded",
        )
    if evaluation.predictions_uri is None:
        raise ApiError(
            404,
            f"Evaluation {evaluation_id} kept no predictions (it ran before evaluations kept "
            "them); queue a new evaluation",
        )
    return evaluation


def _read(evaluation: Evaluation) -> bytes:
    assert evaluation.predictions_uri is not None  # checked by _succeeded
    try:
        return read_bytes(evaluation.predictions_uri)
    except FileNotFoundError:
        raise ApiError(
            404,
            f"The predictions of evaluation {evaluation.id} are gone from the artifact store",
        ) from None


def _load(data: bytes, evaluation_id: str) -> Predictions:
    try:
        return Predictions.load(io.BytesIO(data))
    except PredictionsError as exc:
        raise ApiError(
            409, f"The predictions of evaluation {evaluation_id} cannot be read: {exc}"
        ) from None


def _chunks(lines: Iterator[str], size: int = 1 << 16) -> Iterator[bytes]:
    buffer: list[str] = []
    held = 0
    for line in lines:
        buffer.append(line)
        held += len(line)
        if held >= size:
            yield "".join(buffer).encode()
            buffer, held = [], 0
    if buffer:
        yield "".join(buffer).encode()
