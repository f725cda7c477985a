"""The predict routes, as one table.

Each :class:`PredictRoute` is registered as a FastAPI route (:func:`add_predict_routes`: what
OpenAPI lists, and what answers the requests the dispatch leaves to FastAPI) and is matched by
:class:`~service.predict.dispatch.PredictDispatch` with that very route's path regex. A route
added here is therefore served, documented and counted the same way; none can be served
without being registered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ErrorBody
from service.inference.payload import MAX_TOP_K, PredictJson, TFServingJson
from service.openapi import component
from service.predict.auth import PredictKey
from service.predict.handlers import DEFAULT_TOP_K, JSON_TYPE, run_predict, run_tf_serving
from service.routes import error_responses, multipart_form
from service.schemas.models import PredictionsPublic, TFServingPublic, VersionPath

Handler = Callable[[Request, str, int | None], Awaitable[Response]]

PREDICT_ERRORS = error_responses(404, 409, 413, 415, 503)
PREDICT_ERRORS[504] = {
    "model": ErrorBody,
    "description": "The prediction took longer than predict_timeout_s",
}
_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}]  # service.deps declares the scheme
_LABELS_OPENAPI: dict[str, Any] = {
    "security": _SECURITY,
    "requestBody": {
        "required": True,
        "content": {
            **multipart_form(
                {
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "Image files (JPEG, PNG, BMP, GIF, WebP); any name",
                    },
                    "top_k": {"type": "integer", "minimum": 1},
                    "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                }
            ),
            JSON_TYPE: {"schema": component(PredictJson)},
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
_TF_SERVING_OPENAPI: dict[str, Any] = {
    "security": _SECURITY,
    "requestBody": {
        "required": True,
        "content": {JSON_TYPE: {"schema": component(TFServingJson)}},
    },
}


@dataclass(frozen=True)
class PredictKind:
    """What the routes of one kind share: the handler, the answer's schema, the request's."""

    handler: Handler
    response_model: type[BaseModel]
    openapi_extra: dict[str, Any] = field(repr=False)


LABELS = PredictKind(run_predict, PredictionsPublic, _LABELS_OPENAPI)
TF_SERVING = PredictKind(run_tf_serving, TFServingPublic, _TF_SERVING_OPENAPI)


@dataclass(frozen=True)
class PredictRoute:
    """One predict route: its path template, its kind, and its OpenAPI summary."""

    path: str  # the whole template: FastAPI matches it, and request metrics are labelled by it
    name: str  # the endpoint's name, from which OpenAPI derives the operationId
    kind: PredictKind
    summary: str
    description: str | None = None

    @property
    def versioned(self) -> bool:
        return "{version}" in self.path


_LABELS_DESCRIPTION = (
    'Send images as multipart files, as JSON ``{"images": [{"b64": ...}], "top_k": 3}``,\n'
    "or as a bare body with ``Content-Type: image/png`` (``top_k``/``threshold`` then as query\n"
    "parameters). A bad image is a 4xx naming it (which one, what is wrong)."
)
_TF_SERVING_DESCRIPTION = (
    '``{"instances": [{"b64": "..."}]}`` → ``{"predictions": [[p0, p1, …], …]}``: every\n'
    "class probability per instance, as TF Serving answers for a classifier."
)

PREDICT_ROUTES: tuple[PredictRoute, ...] = (
    PredictRoute(
        "/v1/models/{name}/predict", "predict", LABELS,
        "Labels for images, from the newest version of a model", _LABELS_DESCRIPTION,
    ),
    PredictRoute(
        "/v1/models/{name}/versions/{version}/predict", "predict_version", LABELS,
        "Labels for images, from one version of a model",
    ),
    PredictRoute(
        "/v1/models/{name}:predict", "tf_serving_predict", TF_SERVING,
        "TF Serving-compatible predict (newest version)", _TF_SERVING_DESCRIPTION,
    ),
    PredictRoute(
        "/v1/models/{name}/versions/{version}:predict", "tf_serving_predict_version", TF_SERVING,
        "TF Serving-compatible predict (one version)",
    ),
)  # fmt: skip


def add_predict_routes(router: APIRouter) -> None:
    """Register every route of :data:`PREDICT_ROUTES` on ``router`` (whose prefix they share)."""
    for route in PREDICT_ROUTES:
        if not route.path.startswith(router.prefix):
            raise ValueError(f"{route.path!r} is not under the router's {router.prefix!r}")
        router.add_api_route(
            route.path.removeprefix(router.prefix),
            _endpoint(route),
            methods=["POST"],
            name=route.name,
            summary=route.summary,
            description=route.description,
            response_model=route.kind.response_model,
            responses=PREDICT_ERRORS,
            openapi_extra=route.kind.openapi_extra,
        )


def _endpoint(route: PredictRoute) -> Callable[..., Awaitable[Response]]:
    """The FastAPI endpoint of ``route``: its signature declares the path and the key."""
    handler = route.kind.handler

    async def latest(name: str, request: Request, key: PredictKey) -> Response:
        return await handler(request, name, None)

    async def versioned(
        name: str, version: VersionPath, request: Request, key: PredictKey
    ) -> Response:
        return await handler(request, name, version)

    endpoint = versioned if route.versioned else latest
    endpoint.__name__ = endpoint.__qualname__ = route.name
    return endpoint
