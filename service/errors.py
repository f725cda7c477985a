"""One JSON error shape for every failure, and the handlers that produce it.

Every error the API returns — bad input, auth, missing records, conflicts, a broker that is down,
a bug — has the same body::

    {"error": {"code": "validation_error",
               "message": "body.batch_size: Input should be greater than or equal to 1",
               "details": [{"field": "body.batch_size", "message": "...", "received": 0}]}}

``field`` is where the bad value sits in the request (``body.…``, ``query.…``, ``path.…``) and
``received`` the value that was sent, so a client can point at its mistake. Bad input is always
a 4xx: only a bug reaches the catch-all handler, which logs it and answers 500 in this shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.exc import DataError as DBAPIDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from jobs.records import RecordConflict, RecordNotFound

log = logging.getLogger(__name__)

# Values echoed back in ``received`` are cut to this many characters.
MAX_RECEIVED_CHARS = 200

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    499: "client_closed_request",
    500: "internal_error",
    503: "service_unavailable",
}


class ErrorDetail(BaseModel):
    field: str | None = Field(None, description="Where in the request: body.x, query.y, path.z")
    message: str
    received: Any = Field(None, description="The value that was sent, when there was one")


class ErrorInfo(BaseModel):
    code: str = Field(..., description="Stable, machine-readable: validation_error, not_found…")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


class ApiError(StarletteHTTPException):
    """An error a route raises on purpose; rendered as :class:`ErrorBody`.

    An HTTP exception, so that FastAPI lets it through wherever it is raised: it turns any
    other error raised while it reads a body into a bare 400, and a request body that breaks
    a limit (:mod:`service.limits`) or is not valid JSON (:mod:`service.jsonparse`) is refused
    from inside that read.

    Args:
        status_code: The HTTP status.
        message: For people.
        code: For programs; defaults from the status (``422`` → ``validation_error``).
        details: Per-field problems.
        headers: Extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        details: Sequence[ErrorDetail] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.status_code = status_code
        self.message = message
        self.code = code or _CODES.get(status_code, "error")
        self.details = list(details)
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message


def invalid(field: str, message: str, received: Any = None) -> ApiError:
    """A 422 about one field of the request, e.g. ``invalid("body.path", "...", "../x")``."""
    return ApiError(
        422,
        f"{field}: {message}",
        details=[ErrorDetail(field=field, message=message, received=_received(received))],
    )


# Where an error at a pydantic location (``("schedule", "base_lr")``) sits in the request.
Locate = Callable[[tuple[str | int, ...]], str]


def from_pydantic(
    exc: PydanticValidationError, *, prefix: str = "body", locate: Locate | None = None
) -> ApiError:
    """A 422 from a pydantic error raised while validating part of the request (a config).

    Args:
        exc: The error.
        prefix: Where the validated part sits: each field is ``prefix.<location>``.
        locate: Instead of ``prefix``, maps each error's location to the request's field (an
            experiment maps a cell's config back to its grid axis or its ``base``).
    """
    return _validation_error(
        exc.errors(include_url=False), locate=locate or (lambda loc: _joined((prefix, *loc)))
    )


def error_response(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    details: Iterable[ErrorDetail] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorInfo(
            code=code or _CODES.get(status_code, "error"), message=message, details=list(details)
        )
    )
    return JSONResponse(
        jsonable_encoder(body), status_code=status_code, headers=dict(headers or {})
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise to the one error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RecordNotFound, _not_found)
    app.add_exception_handler(RecordConflict, _conflict)
    app.add_exception_handler(DBAPIDataError, _unstorable)
    app.add_exception_handler(Exception, _unhandled)


# --- handlers --------------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code, exc.message, code=exc.code, details=exc.details, headers=exc.headers
    )


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = _validation_error(exc.errors(), locate=_joined)
    return error_response(err.status_code, err.message, details=err.details)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route that matched the path; a path
        # served by several routes (GET and POST /v1/runs) allows all of theirs (RFC 9110).
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(exc.status_code, message, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at the request's path."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "\x00"}  # a method no route has: path matches only
    for route in request.app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, str(exc))


async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value a client sent (e.g. a NUL character on PostgreSQL).
    log.info("database refused a value in %s %s: %s", request.method, request.url.path, exc)
    return error_response(422, "A value in the request cannot be stored or compared")


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Internal server error; it has been logged.")


# --- helpers ---------------------------------------------------------------------------------


def _joined(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_error(errors: Sequence[Any], *, locate: Locate) -> ApiError:
    details = []
    for error in errors:
        field = locate(tuple(error.get("loc", ()))) or None
        message = str(error.get("msg", "invalid value"))
        # pydantic prefixes the message of a ValueError raised in a validator.
        message = message.removeprefix("Value error, ")
        received = None if error.get("type") == "missing" else _received(error.get("input"))
        details.append(ErrorDetail(field=field, message=message, received=received))
    if not details:
        details.append(ErrorDetail(field=locate(()) or None, message="invalid request"))
    first = details[0]
    summary = f"{first.field}: {first.message}" if first.field else first.message
    if len(details) > 1:
        summary += f" (and {len(details) - 1} more)"
    return ApiError(422, summary, details=details)


def _received(value: Any) -> Any:
    """The value as JSON; as a shortened string when it is long or not JSON-able."""
    try:
        encoded = jsonable_encoder(value)
        text = json.dumps(encoded)
    except Exception:
        encoded = text = repr(value)
    if len(text) > MAX_RECEIVED_CHARS:
        return text[:MAX_RECEIVED_CHARS] + "…"
    return encoded
