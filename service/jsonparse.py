"""JSON request bodies parsed within limits: nesting depth, number length, UTF-8.

Python's ``json`` recurses once per nesting level (a body of 100,000 ``[`` raised
``RecursionError``: a 500) and refuses integers over 4,300 digits with a ``ValueError`` that is
not a ``JSONDecodeError`` (another 500). :func:`parse_json` checks both limits before and while
parsing, so every malformed or over-limit body is one 422 naming what is wrong.

Every JSON body goes through it: the predict routes call it on the body they read, and
:func:`use_limited_json` makes FastAPI's routes (which call ``Request.json()``) use it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response

from service.errors import ApiError, ErrorDetail

# A string literal (escapes included): removed before counting brackets, which it may hold.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


class JsonRejected(ApiError):
    """A JSON body that is not valid or breaks a limit: always 422 at ``body``."""

    def __init__(self, message: str) -> None:
        super().__init__(
            422,
            f"body: {message}",
            details=[ErrorDetail(field="body", message=message)],
        )


def parse_json(raw: bytes, *, max_depth: int, max_number_chars: int) -> Any:
    """Parse a JSON body, refusing bodies that are not UTF-8 JSON or pass a limit.

    Args:
        raw: the body.
        max_depth: the deepest nesting of arrays and objects allowed (``[[1]]`` is 2).
        max_number_chars: the longest number literal allowed (sign, digits, point, exponent).

    Raises:
        JsonRejected: 422 saying what is wrong and, for a limit, its setting.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected(f"not valid UTF-8 (byte {exc.start}); JSON must be UTF-8") from None
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JsonRejected(
            f"JSON nested {depth} deep; at most {max_depth} (request_json_max_depth)"
        )

    def number(literal: str, convert: Callable[[str], Any]) -> Any:
        if len(literal) > max_number_chars:
            raise JsonRejected(
                f"a number of {len(literal)} characters; at most {max_number_chars} "
                "(request_json_max_number_chars)"
            )
        return convert(literal)

    try:
        return json.loads(
            text,
            parse_int=lambda s: number(s, int),
            parse_float=lambda s: number(s, float),
        )
    except json.JSONDecodeError as exc:
        raise JsonRejected(f"not valid JSON: {exc}") from None
    except RecursionError:  # not reachable within the depth limit; kept as a 422 regardless
        raise JsonRejected(f"JSON nested too deep; at most {max_depth}") from None


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, strings skipped, without parsing.

    Linear in the body, in C (two regex passes), and never recursive. Unbalanced brackets are
    left for the parser to refuse.
    """
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def request_json(request: Request, raw: bytes) -> Any:
    """:func:`parse_json` with the app's limits."""
    settings = request.app.state.settings
    return parse_json(
        raw,
        max_depth=settings.request_json_max_depth,
        max_number_chars=settings.request_json_max_number_chars,
    )


class LimitedJsonRequest(Request):
    """A request whose ``json()`` is :func:`request_json` (what FastAPI's routes call)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = request_json(self, await self.body())
        return self._json


def use_limited_json(app: FastAPI) -> None:
    """Make every FastAPI route of ``app`` parse its JSON body with :func:`request_json`.

    FastAPI reads ``Request.json()`` before it validates a body, and turns any error but an
    HTTP exception into a 400 ("There was an error parsing the body"): the route's handler is
    called with a :class:`LimitedJsonRequest` instead, and a refusal is raised as an HTTP
    exception that FastAPI lets through to the app's handler (:class:`JsonRejected`'s shape).
    """
    for route in app.router.routes:
        if isinstance(route, APIRoute):
            route.app = request_response(_limited(route.get_route_handler()))


def _limited(
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    async def handle(request: Request) -> Response:
        return await handler(LimitedJsonRequest(request.scope, request.receive))

    return handle
