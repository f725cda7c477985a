"""The predict routes, dispatched ahead of FastAPI's router.

Why: under load, FastAPI's router (trying every route's regex in turn), its route and request
handler (solving dependencies, validating parameters) took more of the event loop than the
predict endpoint itself. Measured in-process, that costs ~87 µs per predict request more than
this dispatch, which in turn costs ~12 µs more than the old FastAPI subclass in front of every
layer (docs/benchmarks.md, "The predict route table").

:class:`PredictDispatch` is a plain ASGI middleware. ``create_app`` adds it before any other
middleware, so it is the innermost of them: a predict request still passes FastAPI's
server-error, exception-telemetry and body-limit layers,
:class:`~service.metrics.MetricsMiddleware`, and every middleware added after it. What it
skips, and what stands in for each:

- FastAPI's ``ExceptionMiddleware``: its own ``ExceptionMiddleware`` with the app's handlers
  (Starlette's lookup, not a copy), so every error has the one shape; an unexpected error goes
  on to the server-error layer, as from any route;
- the router: each route of :data:`~service.predict.table.PREDICT_ROUTES` is matched with the
  registered FastAPI route's own path regex, and that route is set as ``scope["route"]`` (the
  request metrics label it by its template, as for any route);
- the route's dependencies and parameter validation: the key check
  (:func:`~service.predict.auth.predict_key`) and the body limit are called directly, and a
  version is served here only if FastAPI would accept it (an integer in 1..``MAX_VERSION``);
- FastAPI's ``AsyncExitStackMiddleware``, which closes uploaded files: the payload reader
  closes its form itself;
- the router's naming of the route for FastAPI's native OpenTelemetry (``http.route``): off in
  this service; turned on, a dispatched request would carry no route name.

Anything else, and any predict path FastAPI would refuse (a version that is not a positive
integer, a method other than POST), goes on to FastAPI, whose registered routes answer it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs.ids import MAX_VERSION
from service.inference.payload import limited_receive
from service.predict.auth import predict_key
from service.predict.table import PREDICT_ROUTES, PredictRoute

_MAX_VERSION_DIGITS = len(str(MAX_VERSION))


class PredictDispatch:
    """Serves the requests that match a predict route; passes every other one on to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        exception_handlers: Mapping[Any, Callable[..., Any]],
    ) -> None:
        """
        Args:
            app: the rest of the middleware stack, down to FastAPI's router.
            routes: the routes of the router the predict routes were registered on
                (:func:`~service.predict.table.add_predict_routes`).
            exception_handlers: the app's, which give every error its response.
        """
        self.app = app
        # 500s are left to FastAPI's server-error middleware, as on every other route.
        handlers = {
            key: handler
            for key, handler in exception_handlers.items()
            if key not in (500, Exception)
        }
        self._routes = [
            (_registered(routes, route), ExceptionMiddleware(_answer(route), handlers=handlers))
            for route in PREDICT_ROUTES
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for registered, answer in self._routes:
                match = registered.path_regex.match(path)
                if match is None:
                    continue
                params = match.groupdict()
                if _version_ok(params.get("version")):
                    scope["route"] = registered
                    scope["path_params"] = params
                    await answer(scope, receive, send)
                    return
                break  # FastAPI refuses it, in its own words
        await self.app(scope, receive, send)


def _registered(routes: Sequence[BaseRoute], route: PredictRoute) -> APIRoute:
    for candidate in routes:
        if (
            isinstance(candidate, APIRoute)
            and candidate.path == route.path
            and "POST" in (candidate.methods or ())
        ):
            return candidate
    raise RuntimeError(f"The predict route {route.path} is not registered on these routes")


def _version_ok(version: str | None) -> bool:
    """Whether FastAPI's route would accept this version (``VersionPath``)."""
    if version is None:
        return True
    digits = len(version) <= _MAX_VERSION_DIGITS and version.isascii() and version.isdigit()
    return digits and 1 <= int(version) <= MAX_VERSION


def _answer(route: PredictRoute) -> ASGIApp:
    """The ASGI app answering one matched predict request: key, body limit, handler."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        app: Any = scope["app"]
        limit: int = app.state.settings.predict_max_body_bytes
        request = Request(scope, limited_receive(scope, receive, limit))
        await predict_key(request)
        params: Mapping[str, str] = scope["path_params"]
        version = params.get("version")
        response = await route.kind.handler(
            request, params["name"], None if version is None else int(version)
        )
        await response(scope, receive, send)

    return answer
