"""``/v1/models``: named model versions, their status, and predictions.

- ``GET /v1/models``: the newest version of every model; ``GET /v1/models/{name}``: a model
  and all its versions; ``GET /v1/models/{name}/versions/{version}``: one version. Each says
  whether it is loaded in this process.
- ``POST /v1/models`` ``{"run_id", "name"}``: promote a succeeded run to the next version of
  ``name`` (409 if the run has not succeeded; 403 for another key's run, unless admin).
- ``DELETE /v1/models/{name}/versions/{version}``: delete a version (its promoter's key or an
  admin key; 409 for the newest of several, which requests without a version are served).
- ``GET /v1/models/{name}/versions/{version}/export?format=savedmodel|onnx|keras``: the version
  as a float32 export in TF Serving's ``name/version/`` layout, zipped; exported once, then
  served from its cache (:mod:`service.exports`).
- ``POST /v1/models/{name}[/versions/{version}]/predict``: images as multipart files, JSON
  base64 or a bare image body → each image's top-k labels (multi-label models: every label over
  the threshold). ``name`` may also be a succeeded run's id: every run serves its model.
- ``POST /v1/models/{name}[/versions/{version}]:predict``: TF Serving's REST predict,
  ``{"instances": [{"b64": "..."}]}`` → ``{"predictions": [[p0, p1, ...], ...]}``.

Reads (exports included) need the ``read`` scope, promoting and deleting ``train``, predicting
``predict``. The predict routes come from one table, :mod:`service.predict.table`, and are
served ahead of the router by :mod:`service.predict.dispatch`; how predictions are served fast
(model cache, dynamic batching, decoding off the loop) is in :mod:`service.inference`; answers
are the core :class:`~core.inference.Predictor`'s, to 1e-5.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from core.inference.formats import ExportFormat
from core.training.rundir import LABELS_FILE
from jobs.ids import is_record_id
from jobs.records import RecordNotFound, Run, RunStatus
from jobs.records import repository as records
from jobs.records.models import ModelVersion
from jobs.storage import is_url
from service.deps import ReadKey, SessionDep, SettingsDep, TrainKey, committed
from service.errors import ApiError
from service.exports import ExportJob, forget_exports, get_exporter
from service.inference.payload import LimitedRoute
from service.inference.runtime import Inference
from service.owners import require_owner
from service.predict.table import add_predict_routes
from service.routes import AUTH_ERRORS, error_responses
from service.schemas.models import (
    ModelPromote,
    ModelPublic,
    ModelsPublic,
    ModelStatus,
    ModelVersionPublic,
    VersionPath,
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    inference: Inference | None = getattr(app.state, "inference", None)
    if inference is not None:
        await inference.close()
    exporter = getattr(app.state, "exporter", None)
    if exporter is not None:
        exporter.close()


router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    responses=error_responses(*AUTH_ERRORS, 422),
    route_class=LimitedRoute,
    lifespan=_lifespan,
)


# --- models ----------------------------------------------------------------------------------


@router.get("", summary="The newest version of every model")
def list_models(request: Request, session: SessionDep, key: ReadKey) -> ModelsPublic:
    return ModelsPublic(
        items=[_public_version(request, session, v) for v in records.list_models(session)]
    )


@router.post(
    "",
    status_code=201,
    summary="Promote a succeeded run to the next version of a named model",
    responses=error_responses(404, 409),
)
def promote(
    body: ModelPromote, request: Request, response: Response, session: SessionDep, key: TrainKey
) -> ModelVersionPublic:
    """The run becomes version N+1 of ``name`` (version 1 of a new name). A run that has not
    succeeded, or recorded no model: 409. Another key's run: 403, unless this is an admin key
    (the version is owned by the key that promotes it)."""
    run = records.get_run(session, body.run_id)
    require_owner(session, key, run, f"Run {run.id}")
    with committed(session):
        promoted = records.promote_run(session, body.run_id, body.name, api_key_id=key.id)
    _forget_names(request)
    response.headers["Location"] = f"{router.prefix}/{promoted.name}/versions/{promoted.version}"
    return _public_version(request, session, promoted)


@router.get(
    "/{name}",
    summary="A model and all its versions (or a succeeded run's model, by run id)",
    responses=error_responses(404),
)
def get_model(name: str, request: Request, session: SessionDep, key: ReadKey) -> ModelPublic:
    versions = records.list_model_versions(session, name)
    if versions:
        return ModelPublic(
            name=name,
            latest_version=versions[0].version,
            versions=[_public_version(request, session, v) for v in versions],
        )
    run = session.get(Run, name) if is_record_id(name) else None
    if run is None or run.status != RunStatus.SUCCEEDED:
        raise RecordNotFound("Model", name)
    return ModelPublic(
        name=name, latest_version=None, versions=[_public_run(request, session, run)]
    )


@router.get(
    "/{name}/versions/{version:int}",
    summary="One version of a model, and whether it is loaded",
    responses=error_responses(404),
)
def get_model_version(
    name: str,
    version: VersionPath,
    request: Request,
    session: SessionDep,
    key: ReadKey,
) -> ModelVersionPublic:
    return _public_version(request, session, records.get_model_version(session, name, version))


@router.delete(
    "/{name}/versions/{version:int}",
    status_code=204,
    summary="Delete a model version (its promoter's key or an admin key)",
    responses=error_responses(404, 409),
)
def delete_model_version(
    name: str,
    version: VersionPath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: TrainKey,
) -> Response:
    """The version is no longer listed or served, and its number is never reused. Its run and
    the run's files stay (the run still serves its model by run id) until the run is deleted,
    which this makes possible. The newest of several versions, which requests naming no version
    are served: 409 (promote the run to serve first). Another key's version: 403, unless this
    is an admin key."""
    found = records.get_model_version(session, name, version)
    require_owner(session, key, found, f"Model {name} version {version}")
    artifact = records.get_model_artifact(session, found.run.id)
    with committed(session):
        records.delete_model_version(session, name, version)
    _forget_names(request)
    if artifact is not None:
        forget_exports(
            settings, name=name, version=version, run_id=artifact.run_id, uri=artifact.uri
        )
    return Response(status_code=204)


# --- exports ---------------------------------------------------------------------------------

EXPORT_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/zip": {}},
        "description": "A zip of NAME/VERSION/ (the SavedModel, model.onnx or model.keras), "
        "NAME/labels.json and NAME/export.json (input, output, verification)",
    }
}


@router.get(
    "/{name}/versions/{version:int}/export",
    summary="A version exported for another server (zip): TF SavedModel, ONNX or .keras",
    response_class=FileResponse,
    responses={**EXPORT_CONTENT, **error_responses(404, 409, 503)},
)
async def export_model_version(
    name: str,
    version: VersionPath,
    request: Request,
    session: SessionDep,
    key: ReadKey,
    export_format: Annotated[
        ExportFormat,
        Query(
            alias="format",
            description="savedmodel (TF Serving: unzip and pass NAME as --model_base_path), "
            "onnx (ONNX Runtime, Triton) or keras",
        ),
    ],
) -> FileResponse:
    """The model as a float32 inference graph whatever precision it was trained in (a mixed
    bfloat16/float16 model is cast, same weights), with the preprocessing inside, checked
    against the Keras model before it is kept. Exported on the first request (seconds to
    minutes, in a thread of its own), then served from the cache beside the version's files.
    No model file: 409; the model or the archive over ``RESNET_EXPORT_MAX_BYTES``: 409; the
    server lacks the format's converter: 503."""
    job = await run_in_threadpool(_export_job, session, name, version, export_format)
    path = await get_exporter(request.app).archive(job)
    return FileResponse(path, media_type="application/zip", filename=job.filename)


def _export_job(session: Session, name: str, version: int, fmt: ExportFormat) -> ExportJob:
    found = records.get_model_version(session, name, version)
    artifact = records.get_model_artifact(session, found.run.id)
    if artifact is None:
        raise ApiError(409, f"{name} version {version} has no model to export: none recorded")
    return ExportJob(name, version, found.run.id, artifact.uri, fmt)


# --- predictions: the four routes of the predict table --------------------------------------

add_predict_routes(router)


# --- helpers ---------------------------------------------------------------------------------


def _forget_names(request: Request) -> None:
    """Versions changed: this process resolves names afresh at once (others within the TTL)."""
    inference: Inference | None = getattr(request.app.state, "inference", None)
    if inference is not None:
        inference.refs.clear()


def _public_version(
    request: Request, session: Session, version: ModelVersion
) -> ModelVersionPublic:
    return _describe(
        request, session, version.run, name=version.name, version=version.version,
        created=version.created_at, owner=version.api_key_id,
    )  # fmt: skip


def _public_run(request: Request, session: Session, run: Run) -> ModelVersionPublic:
    return _describe(
        request,
        session,
        run,
        name=None,
        version=None,
        created=run.finished_at or run.created_at,
        owner=run.api_key_id,
    )


def _describe(
    request: Request,
    session: Session,
    run: Run,
    *,
    name: str | None,
    version: int | None,
    created: datetime,
    owner: str | None,
) -> ModelVersionPublic:
    artifact = records.get_model_artifact(session, run.id)
    classes, multi_label = _labels(artifact.uri) if artifact is not None else (None, None)
    inference: Inference | None = getattr(request.app.state, "inference", None)
    status: dict[str, Any] = {"state": "not_loaded"}
    if inference is not None and artifact is not None:
        status = inference.cache.status(artifact.uri)
    return ModelVersionPublic(
        name=name,
        version=version,
        run_id=run.id,
        architecture=run.architecture,
        dataset=run.dataset,
        classes=classes,
        multi_label=multi_label,
        metrics=run.metrics,
        created_at=created,
        status=ModelStatus(**status),
        owner_key_id=owner,
    )


def _labels(model_uri: str) -> tuple[list[str] | None, bool | None]:
    """Class names and multi-label flag from ``labels.json`` beside a local model file.

    A model on shared storage (``gs://…``) is not read here (that needs TensorFlow's file
    system); its classes show once it is loaded… or not at all: ``None``.
    """
    path = model_uri.removeprefix("file://")
    if is_url(path):
        return None, None
    try:
        data = json.loads((FilePath(path).parent / LABELS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    names = data.get("class_names")
    multi = data.get("multi_label")
    return (
        [str(n) for n in names] if isinstance(names, list) else None,
        multi if isinstance(multi, bool) else None,
    )
