"""The predict routes, reached without FastAPI's request stack.

A request to any other route passes eight ASGI layers (server-error, telemetry, body-limit,
metrics and exception middlewares, the router, the route, FastAPI's request handler) before its
endpoint runs. Profiled under load, those layers took more of the event loop than the predict
endpoint itself. So :class:`ServiceApp` matches the four predict paths first and calls the same
handlers as the routes in :mod:`service.routes.models` do — the same key check, body limit,
error shape (every exception goes to the app's own handlers) and Prometheus request metrics.

Anything else, and any predict path FastAPI would refuse (a version that is not a positive
integer, a method other than POST), goes through FastAPI as before. The routes stay registered
there too: they document the API (OpenAPI) and serve those refusals.
"""

from __future__ import annotations

import inspect
import re
import time
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from jobs.ids import MAX_VERSION

PREDICT_PATH = re.compile(
    r"/v1/models/(?P<name>[^/]+?)(?:/versions/(?P<version>[0-9]{1,10}))?(?P<kind>/predict|:predict)"
)
# The route templates, as FastAPI's request metrics label them.
_TEMPLATES = {
    ("/predict", False): "/v1/models/{name}/predict",
    ("/predict", True): "/v1/models/{name}/versions/{version}/predict",
    (":predict", False): "/v1/models/{name}:predict",
    (":predict", True): "/v1/models/{name}/versions/{version}:predict",
}


class ServiceApp(FastAPI):
    """The API: FastAPI, with the predict routes matched before its middleware stack."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = PREDICT_PATH.fullmatch(scope["path"])
            if match is not None and _version_ok(match["version"]):
                await _predict(self, match, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _version_ok(version: str | None) -> bool:
    return version is None or 1 <= int(version) <= MAX_VERSION


async def _predict(
    app: ServiceApp, match: re.Match[str], scope: Scope, receive: Receive, send: Send
) -> None:
    # Imported here: service.routes imports the app's modules, which import this one.
    from service.inference.payload import limited_receive
    from service.routes.models import predict_key, run_predict, run_tf_serving

    start = time.perf_counter()
    scope["app"] = app  # as Starlette sets it: Request.app reads it
    limit: int = app.state.settings.predict_max_body_bytes
    request = Request(scope, limited_receive(scope, receive, limit))
    name, version = match["name"], match["version"]
    try:
        await predict_key(request)
        handler = run_predict if match["kind"] == "/predict" else run_tf_serving
        response = await handler(request, name, None if version is None else int(version))
    except Exception as exc:
        response = await _handled(app, request, exc)
    await response(scope, receive, send)
    template = _TEMPLATES[(match["kind"], version is not None)]
    app.state.metrics.observe("POST", template, response.status_code, time.perf_counter() - start)


async def _handled(app: FastAPI, request: Request, exc: Exception) -> Response:
    """The response the app's exception handlers give for ``exc`` (closest class first)."""
    handlers: dict[Any, Any] = app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            result = handler(request, exc)
            response: Response = await result if inspect.isawaitable(result) else result
            return response
    raise exc
