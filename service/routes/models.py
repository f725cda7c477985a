"""``/v1/models``: named model versions, their status, and predictions.

- ``GET /v1/models``: the newest version of every model; ``GET /v1/models/{name}``: a model
  and all its versions; ``GET /v1/models/{name}/versions/{version}``: one version. Each says
  whether it is loaded in this process.
- ``POST /v1/models`` ``{"run_id", "name"}``: promote a succeeded run to the next version of
  ``name`` (409 if the run has not succeeded).
- ``POST /v1/models/{name}[/versions/{version}]/predict``: images as multipart files, JSON
  base64 or a bare image body → each image's top-k labels (multi-label models: every label over
  the threshold). ``name`` may also be a succeeded run's id: every run serves its model.
- ``POST /v1/models/{name}[/versions/{version}]:predict``: TF Serving's REST predict,
  ``{"instances": [{"b64": "..."}]}`` → ``{"predictions": [[p0, p1, ...], ...]}``.

Reads need the ``read`` scope, promoting ``train``, predicting ``predict``. How predictions are
served fast (model cache, dynamic batching, decoding off the loop) is in
:mod:`service.inference`; answers are the core :class:`~core.inference.Predictor`'s, to 1e-5.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.ranking import ranked_labels
from core.training.rundir import LABELS_FILE
from jobs.ids import MAX_VERSION, NAME_RULE, RECORD_ID_RULE, is_name, is_record_id
from jobs.records import ApiKey, RecordNotFound, Run, RunStatus, Scope
from jobs.records import repository as records
from jobs.records.models import ModelVersion
from jobs.records.repository import hash_api_key
from jobs.storage import is_url
from service.deps import ReadKey, SessionDep, TrainKey, committed, require
from service.errors import ApiError, ErrorBody, ErrorDetail
from service.inference.batcher import BatcherClosed, Overloaded
from service.inference.cache import LoadedModel, ModelRef, ModelUnavailable
from service.inference.images import ImageRejected
from service.inference.payload import (
    MAX_TOP_K,
    EncodedImage,
    LimitedRoute,
    PredictJson,
    TFServingJson,
    query_options,
    read_predict,
    read_tf_serving,
)
from service.inference.runtime import Inference
from service.routes import AUTH_ERRORS, error_responses

DEFAULT_TOP_K = 5
RETRY_AFTER_S = 1
JSON_TYPE = "application/json"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    inference: Inference | None = getattr(app.state, "inference", None)
    if inference is not None:
        await inference.close()


router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    responses=error_responses(*AUTH_ERRORS, 422),
    route_class=LimitedRoute,
    lifespan=_lifespan,
)


def get_inference(app: FastAPI) -> Inference:
    """The app's prediction runtime, created on first use (on the event loop)."""
    inference: Inference | None = getattr(app.state, "inference", None)
    if inference is None:
        inference = Inference(app.state.settings, app.state.sessions, app.state.metrics.registry)
        app.state.inference = inference
    return inference


# --- auth on the hot path ---------------------------------------------------------------------

_check_predict_key = require(Scope.PREDICT)


async def predict_key(request: Request) -> ApiKey:
    """``require(Scope.PREDICT)``, with a key that passed trusted for ``predict_cache_ttl_s``.

    A prediction then costs no database round trip; a revoked key stops working within the
    TTL. Failures (401, 403) are never cached. The bearer token is read straight from the
    header (as ``HTTPBearer`` reads it): one dependency fewer to solve on every request.
    """
    inference = get_inference(request.app)
    credentials = _bearer_token(request.headers.get("authorization"))
    digest = hash_api_key(credentials.credentials) if credentials is not None else ""
    if digest:
        trusted = inference.trusted_key(digest, Scope.PREDICT)
        if trusted is not None:
            return trusted
    key = await run_in_threadpool(_check_key, inference.sessions, credentials)
    if digest:
        inference.trust_key(digest, Scope.PREDICT, key)
    return key


def _bearer_token(header: str | None) -> HTTPAuthorizationCredentials | None:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())


def _check_key(
    sessions: sessionmaker[Session], credentials: HTTPAuthorizationCredentials | None
) -> ApiKey:
    with sessions() as session:
        return _check_predict_key(session, credentials)


predict_key.required_scope = Scope.PREDICT  # type: ignore[attr-defined]  # for the route walk
PredictKey = Annotated[ApiKey, Depends(predict_key)]


# --- schemas ---------------------------------------------------------------------------------


class ModelPromote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(..., description="A succeeded run")
    name: str = Field(..., description="The model's name: letters, digits, '.', '_', '-'")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not is_name(v):
            raise ValueError(f"a model name is {NAME_RULE}")
        if is_record_id(v):
            raise ValueError(f"a model name must not look like a run id ({RECORD_ID_RULE})")
        return v


class ModelStatus(BaseModel):
    state: Literal["loaded", "loading", "not_loaded", "failed"] = Field(
        ..., description="In this API process"
    )
    queued: int | None = Field(None, description="Images waiting for the model")
    weight_bytes: int | None = None
    load_seconds: float | None = None
    error: str | None = Field(None, description="Why the last load failed")


class ModelVersionPublic(BaseModel):
    name: str | None = Field(..., description="None when the run is addressed by its id")
    version: int | None
    run_id: str
    architecture: str
    dataset: str
    classes: list[str] | None = Field(None, description="From the model's labels.json")
    multi_label: bool | None = None
    metrics: dict[str, Any] | None = Field(None, description="The run's test metrics")
    created_at: datetime = Field(..., description="When promoted (the run's end, for a run id)")
    status: ModelStatus


class ModelsPublic(BaseModel):
    items: list[ModelVersionPublic] = Field(..., description="The newest version of each model")


class ModelPublic(BaseModel):
    name: str
    latest_version: int | None
    versions: list[ModelVersionPublic] = Field(..., description="Newest first")


class LabelPublic(BaseModel):
    label: str
    index: int
    probability: float


class ImagePredictionPublic(BaseModel):
    name: str | None = Field(None, description="The file name or the name the image was sent with")
    labels: list[LabelPublic] = Field(..., description="Best first")


class PredictionModelPublic(BaseModel):
    name: str | None
    version: int | None
    run_id: str


class PredictionsPublic(BaseModel):
    model: PredictionModelPublic
    predictions: list[ImagePredictionPublic] = Field(..., description="One per image, in order")


class TFServingPublic(BaseModel):
    predictions: list[list[float]] = Field(..., description="Per instance: every probability")


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
    succeeded, or recorded no model: 409."""
    with committed(session):
        promoted = records.promote_run(session, body.run_id, body.name)
    inference: Inference | None = getattr(request.app.state, "inference", None)
    if inference is not None:
        inference.refs.clear()  # "newest version" changed: this process sees it at once
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
    "/{name}/versions/{version}",
    summary="One version of a model, and whether it is loaded",
    responses=error_responses(404),
)
def get_model_version(
    name: str,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    request: Request,
    session: SessionDep,
    key: ReadKey,
) -> ModelVersionPublic:
    return _public_version(request, session, records.get_model_version(session, name, version))


# --- predictions -----------------------------------------------------------------------------

_PREDICT_ERRORS = error_responses(404, 409, 413, 415, 503)
_PREDICT_ERRORS[504] = {
    "model": ErrorBody,
    "description": "The prediction took longer than predict_timeout_s",
}
_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}]  # service.deps declares the scheme
_PREDICT_BODY: dict[str, Any] = {
    "security": _SECURITY,
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Image files (JPEG, PNG, BMP, GIF, WebP); any name",
                        },
                        "top_k": {"type": "integer", "minimum": 1},
                        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                }
            },
            JSON_TYPE: {"schema": PredictJson.model_json_schema()},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    # Parsed by payload.query_options rather than declared: FastAPI's parameter machinery costs
    # more per request than the rest of the route. Documented here.
    "parameters": [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "description": f"Single-label models: labels per image (default {DEFAULT_TOP_K})",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
        },
        {
            "name": "threshold",
            "in": "query",
            "required": False,
            "description": "Multi-label models: the cut (default: the model's)",
            "schema": {"type": "number", "minimum": 0, "maximum": 1},
        },
    ],
}
_TF_SERVING_BODY: dict[str, Any] = {
    "security": _SECURITY,
    "requestBody": {
        "required": True,
        "content": {JSON_TYPE: {"schema": TFServingJson.model_json_schema()}},
    },
}
_Version = Annotated[int, Path(ge=1, le=MAX_VERSION)]


@router.post(
    "/{name}/predict",
    summary="Labels for images, from the newest version of a model",
    response_model=PredictionsPublic,
    responses=_PREDICT_ERRORS,
    openapi_extra=_PREDICT_BODY,
)
async def predict(name: str, request: Request, key: PredictKey) -> Response:
    """Send images as multipart files, as JSON ``{"images": [{"b64": ...}], "top_k": 3}``,
    or as a bare body with ``Content-Type: image/png`` (``top_k``/``threshold`` then as query
    parameters). A bad image is a 4xx naming it (which one, what is wrong)."""
    return await run_predict(request, name, None)


@router.post(
    "/{name}/versions/{version}/predict",
    summary="Labels for images, from one version of a model",
    response_model=PredictionsPublic,
    responses=_PREDICT_ERRORS,
    openapi_extra=_PREDICT_BODY,
)
async def predict_version(
    name: str, version: _Version, request: Request, key: PredictKey
) -> Response:
    return await run_predict(request, name, version)


@router.post(
    "/{name}:predict",
    summary="TF Serving-compatible predict (newest version)",
    response_model=TFServingPublic,
    responses=_PREDICT_ERRORS,
    openapi_extra=_TF_SERVING_BODY,
)
async def tf_serving_predict(name: str, request: Request, key: PredictKey) -> Response:
    """``{"instances": [{"b64": "..."}]}`` → ``{"predictions": [[p0, p1, …], …]}``: every
    class probability per instance, as TF Serving answers for a classifier."""
    return await run_tf_serving(request, name, None)


@router.post(
    "/{name}/versions/{version}:predict",
    summary="TF Serving-compatible predict (one version)",
    response_model=TFServingPublic,
    responses=_PREDICT_ERRORS,
    openapi_extra=_TF_SERVING_BODY,
)
async def tf_serving_predict_version(
    name: str, version: _Version, request: Request, key: PredictKey
) -> Response:
    return await run_tf_serving(request, name, version)


async def run_predict(request: Request, name: str, version: int | None) -> Response:
    inference = get_inference(request.app)
    ref = await inference.resolve(name, version)
    top_k, threshold = query_options(request)
    payload = await read_predict(request, max_images=_max_images(inference))
    top_k = payload.top_k if payload.top_k is not None else top_k
    threshold = payload.threshold if payload.threshold is not None else threshold
    model, rows = await _run(inference, ref, payload.images)
    k = min(top_k or DEFAULT_TOP_K, model.num_classes)  # as the core Predictor clamps it
    cut = model.threshold if threshold is None else threshold
    names = model.class_names
    body = {
        "model": {"name": ref.name, "version": ref.version, "run_id": ref.run_id},
        "predictions": [
            {
                "name": image.label,
                "labels": ranked_labels(
                    row, names, multi_label=model.multi_label, top_k=k, threshold=cut
                ),
            }
            for image, row in zip(payload.images, rows, strict=True)
        ],
    }
    # Built by hand, not through a response model: this is the hot path.
    return Response(json.dumps(body).encode(), media_type=JSON_TYPE)


async def run_tf_serving(request: Request, name: str, version: int | None) -> Response:
    inference = get_inference(request.app)
    ref = await inference.resolve(name, version)
    images = await read_tf_serving(request, max_images=_max_images(inference))
    _, rows = await _run(inference, ref, images)
    body = {"predictions": [row.tolist() for row in rows]}
    return Response(json.dumps(body).encode(), media_type=JSON_TYPE)


async def _run(
    inference: Inference,
    ref: ModelRef,
    images: Sequence[EncodedImage],
) -> tuple[LoadedModel, list[np.ndarray]]:
    """Load (or find) the model, decode the images off the loop, and batch them through it,
    all within ``predict_timeout_s``."""
    timeout = inference.settings.predict_timeout_s
    try:
        async with asyncio.timeout(timeout):
            while True:
                model = await _model(inference, ref)
                try:
                    reservation = model.batcher.reserve(len(images))
                except BatcherClosed:
                    continue  # evicted meanwhile: load it again
                except Overloaded as exc:
                    inference.metrics.refused.labels("overloaded").inc()
                    raise ApiError(
                        503,
                        f"Too many images are waiting for this model; try again shortly ({exc})",
                        code="overloaded",
                        headers={"Retry-After": str(RETRY_AFTER_S)},
                    ) from None
                with reservation:
                    try:
                        arrays = await inference.decode(images, model.spec)
                    except ImageRejected as exc:
                        raise _image_error(exc) from None
                    try:
                        futures = reservation.submit(arrays)
                    except BatcherClosed:
                        continue  # evicted while decoding: load it again
                return model, list(await asyncio.gather(*futures))
    except TimeoutError:
        inference.metrics.refused.labels("timeout").inc()
        raise ApiError(
            504,
            f"The prediction did not finish within {timeout:g} s (predict_timeout_s)",
            code="timeout",
        ) from None


def _max_images(inference: Inference) -> int:
    settings = inference.settings
    # A request larger than the queue could never be taken: refuse it as too many images.
    return min(settings.predict_max_images, settings.predict_queue_limit)


async def _model(inference: Inference, ref: ModelRef) -> LoadedModel:
    try:
        return await inference.cache.get(ref)
    except ModelUnavailable as exc:
        raise ApiError(
            503,
            f"The model of run {ref.run_id} could not be loaded: {exc}",
            code="model_unavailable",
        ) from None


def _image_error(exc: ImageRejected) -> ApiError:
    return ApiError(
        exc.status,
        str(exc),
        code=exc.code,
        details=[ErrorDetail(field=exc.field, message=exc.reason, received=exc.label)],
    )


# --- helpers ---------------------------------------------------------------------------------


def _public_version(
    request: Request, session: Session, version: ModelVersion
) -> ModelVersionPublic:
    return _describe(
        request, session, version.run, name=version.name, version=version.version,
        created=version.created_at,
    )  # fmt: skip


def _public_run(request: Request, session: Session, run: Run) -> ModelVersionPublic:
    return _describe(
        request, session, run, name=None, version=None, created=run.finished_at or run.created_at
    )


def _describe(
    request: Request,
    session: Session,
    run: Run,
    *,
    name: str | None,
    version: int | None,
    created: datetime,
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
