"""Request limits applied at the door, before any route reads or parses a body.

:class:`RequestLimits` is an ASGI middleware in front of every route. For each request, in
this order:

1. **The API key** (:class:`~service.keygate.KeyGate`), for every path under ``/v1``: no key,
   or one that is not valid, is a 401 before the body is read, so an anonymous client cannot
   make the server read, buffer or parse anything (whatever size it declares).
2. **Body size** (:data:`BODY_LIMITS`, one table): a declared ``Content-Length`` over the
   route's limit is a 413 before a byte is read; a body without one (chunked) is counted as it
   streams and refused (413) by the read that passes the limit. Nothing over the limit is ever
   held in memory.
3. **Body read timeouts**: a body whose next piece does not come within
   ``request_body_idle_timeout_s``, or that is not all in within ``request_body_timeout_s``, is
   a 408 (a client that stalls mid-upload does not hold the request open forever).
4. **JSON bodies** of the routes FastAPI parses (all but uploads and predicts, which parse
   their own with :func:`~service.jsonparse.parse_json`): read (within the small limit of 1.)
   and checked by :func:`~service.jsonparse.check_json` (UTF-8, nesting depth, number length)
   before FastAPI's parser sees them: a 422 naming the limit instead of a 400 or a 500.

Each limit is a setting (``jobs.settings``, "request limits"); docs/security.md lists them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import BaseRoute, Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.settings import Settings
from service.errors import ApiError, error_response
from service.jsonparse import check_json
from service.keygate import KeyGate
from service.predict.table import PREDICT_ROUTES

KEYED_PREFIX = "/v1/"  # every route under it needs an API key (health and docs are outside)


@dataclass(frozen=True)
class BodyLimit:
    """The body limit of the routes whose path matches ``path`` (a route template)."""

    path: str
    setting: str  # the Settings field holding the limit, in bytes

    @property
    def pattern(self) -> re.Pattern[str]:
        return compile_path(self.path)[0]


# Routes whose bodies may be larger than a JSON request's; every other route gets
# DEFAULT_BODY_LIMIT.
BODY_LIMITS: tuple[BodyLimit, ...] = (
    *(BodyLimit(route.path, "predict_max_body_bytes") for route in PREDICT_ROUTES),
    BodyLimit("/v1/datasets/upload", "max_upload_bytes"),
)
DEFAULT_BODY_LIMIT = "request_max_json_bytes"
_PREDICT_SETTING = "predict_max_body_bytes"


def body_limit(path: str) -> str:
    """The setting that limits the body of a request to ``path``."""
    for limit, pattern in _PATTERNS:
        if pattern.match(path):
            return limit.setting
    return DEFAULT_BODY_LIMIT


_PATTERNS = [(limit, limit.pattern) for limit in BODY_LIMITS]


def too_large(limit: int, setting: str) -> ApiError:
    return ApiError(413, f"The request body is larger than the limit of {limit} bytes ({setting})")


def too_slow(seconds: float, setting: str) -> ApiError:
    return ApiError(
        408,
        f"The request body did not arrive within {seconds:g} s ({setting}); send it again",
        headers={"Connection": "close"},
    )


class RequestLimits:
    """The middleware; see the module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        """
        Args:
            app: the rest of the stack.
            settings: the limits.
            sessions: for the key check.
            routes: the app's routes, to name the route of a request refused here (the request
                metrics count it under its route, as if the route had answered).
        """
        self.app = app
        self.settings = settings
        self.gate = KeyGate(settings, sessions)
        self.routes = [route for route in routes if isinstance(route, Route)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            guarded = await self._admit(scope, receive)
            if _checks_json(scope):
                guarded = await self._checked_json(guarded)
            await self.app(scope, guarded, tracked_send)
        except ApiError as exc:
            # Raised here or by a body read outside any route's handlers.
            if started:
                raise
            route = self._route(scope)
            if route is not None:
                scope.setdefault("route", route)
            response = error_response(
                exc.status_code, exc.message, code=exc.code, details=exc.details,
                headers=exc.headers,
            )  # fmt: skip
            await response(scope, receive, send)

    def _route(self, scope: Scope) -> Route | None:
        for route in self.routes:
            if route.path_regex.match(scope["path"]) and scope["method"] in (route.methods or ()):
                return route
        return None

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        """Check the declared size and the key; the ``receive`` that enforces the rest."""
        path: str = scope["path"]
        setting = body_limit(path)
        limit: int = getattr(self.settings, setting)
        if path.startswith(KEYED_PREFIX):
            await self.gate.admit(scope, predict=setting == _PREDICT_SETTING)
        declared = content_length(scope)
        if declared is not None and declared > limit:
            raise too_large(limit, setting)
        return guarded_receive(
            receive,
            limit=limit,
            setting=setting,
            idle_s=self.settings.request_body_idle_timeout_s,
            total_s=self.settings.request_body_timeout_s,
        )

    async def _checked_json(self, receive: Receive) -> Receive:
        """Read the (small) JSON body, check it with :func:`~service.jsonparse.check_json`,
        and hand it on as if it had just arrived."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay(b"", receive, message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        check_json(
            body,
            max_depth=self.settings.request_json_max_depth,
            max_number_chars=self.settings.request_json_max_number_chars,
        )
        return _replay(body, receive)


def _checks_json(scope: Scope) -> bool:
    """Whether the body is JSON for a route FastAPI parses (not an upload, not a predict).

    FastAPI parses a body as JSON when its type says so, or when it has no type at all.
    """
    if scope["method"] in ("GET", "HEAD", "OPTIONS") or body_limit(scope["path"]) != (
        DEFAULT_BODY_LIMIT
    ):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or (
                kind.startswith(b"application/") and kind.endswith(b"+json")
            )
    return True


def _replay(body: bytes, receive: Receive, first: Message | None = None) -> Receive:
    """A ``receive`` that gives ``first`` (or the whole ``body``) once, then ``receive``'s."""
    pending: Message | None = first or {"type": "http.request", "body": body, "more_body": False}

    async def replayed() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await receive()

    return replayed


def content_length(scope: Scope) -> int | None:
    """The declared ``Content-Length``, if any (the server refuses a malformed one)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def guarded_receive(
    receive: Receive, *, limit: int, setting: str, idle_s: float, total_s: float
) -> Receive:
    """``receive``, refusing a body past ``limit`` bytes (413) or too slow to arrive (408).

    Once the body is complete, ``receive`` is passed through untouched: a route (or Starlette)
    waiting for the client to disconnect must not time out.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s
    received = 0
    complete = False

    async def limited() -> Message:
        nonlocal received, complete
        if complete:
            return await receive()
        left = deadline - loop.time()
        wait, which = (idle_s, "request_body_idle_timeout_s")
        if left < idle_s:
            wait, which = (left, "request_body_timeout_s")
        if wait <= 0:
            raise too_slow(total_s, which)
        try:
            async with asyncio.timeout(wait):
                message = await receive()
        except TimeoutError:
            raise too_slow(idle_s if which.endswith("idle_timeout_s") else total_s, which) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit, setting)
            complete = not message.get("more_body", False)
        else:
            complete = True  # http.disconnect: nothing more will come
        return message

    return limited
