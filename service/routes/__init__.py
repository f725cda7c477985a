"""One router per resource, and what they share: error responses, pagination, zip downloads.

Route modules import from here, never from each other."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from service.errors import ErrorBody

MAX_PAGE = 200
MAX_OFFSET = 2**31 - 1  # beyond it SQLite cannot even bind the number
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]

_DESCRIPTIONS = {
    400: "Malformed request",
    401: "No API key, or an unknown or revoked one",
    403: "The API key lacks the scope",
    404: "No such record",
    409: "The record's state forbids it",
    413: "The upload is over the size limit",
    415: "Not multipart/form-data",
    422: "Invalid input; the details name each field and what was received",
    503: "A dependency (database or broker) is unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these status codes, all with the one error body."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


AUTH_ERRORS = (401, 403)


def multipart_form(
    properties: dict[str, Any], *, required: list[str] | None = None
) -> dict[str, Any]:
    """The OpenAPI media type of a ``multipart/form-data`` form with these fields (for routes
    that parse their body by hand, so FastAPI cannot describe it)."""
    schema: dict[str, Any] = {"type": "object"}
    if required:
        schema["required"] = required
    schema["properties"] = properties
    return {"multipart/form-data": {"schema": schema}}


def keyed_router(*, tag: str, prefix: str = "") -> APIRouter:
    """The router of one resource whose routes all need an API key.

    Its OpenAPI entries list 401 and 403 on every route, and 422, which any route with
    parameters may answer, all in the one error shape.
    """
    return APIRouter(prefix=prefix, tags=[tag], responses=error_responses(*AUTH_ERRORS, 422))


# A download: the run's or the experiment's reproducibility bundle.
ZIP_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "A zip file"}
}


def zip_response(data: bytes, filename: str) -> Response:
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
