"""The API-key check at the door, before any body is read, and the slowing of failed keys.

:class:`~service.limits.RequestLimits` calls :meth:`KeyGate.admit` for every path under
``/v1``. A request without a key, or with a key that is unknown or revoked, is answered 401
there, so its body is never read nor parsed (FastAPI reads a body before it solves a route's
dependencies, so the routes' own key dependency came too late for that). A key that passes is
left in the request's state, where :func:`service.deps.require` checks its scope without
looking it up again.

Every refused key is logged with its first characters and the client's address. A client
whose keys keep failing is slowed: each failure spends a token of a small per-client bucket
(``auth_failures_burst`` tokens, refilled at ``auth_failures_per_second``), and a failure with
the bucket empty is a 429 with ``Retry-After``. A valid key is never slowed: it is checked
first, whatever the bucket holds.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Scope

from jobs.records import ApiKey
from jobs.records.db import committed
from jobs.records.keys import API_KEY_DISPLAY_CHARS
from jobs.records.repository import authenticate
from jobs.settings import Settings
from service.errors import ApiError

log = logging.getLogger(__name__)

STATE_KEY = "api_key"  # where an admitted key waits in ``scope["state"]``
_MAX_CLIENTS = 10_000  # buckets kept at most (full ones are dropped first)


def admitted_key(scope: Scope) -> ApiKey | None:
    """The key :meth:`KeyGate.admit` let in for this request, if any."""
    state: dict[str, Any] = scope.get("state") or {}
    key: ApiKey | None = state.get(STATE_KEY)
    return key


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, as ``HTTPBearer`` reads it."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def key_required() -> ApiError:
    return ApiError(
        401,
        "An API key is required: send 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def key_invalid() -> ApiError:
    return ApiError(
        401,
        "The API key is not valid (unknown or revoked)",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class FailureThrottle:
    """Per-client token buckets for failed keys."""

    def __init__(self, *, burst: int, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, when)

    def spend(self, client: str) -> float:
        """Spend a token of ``client``'s bucket: 0 if there was one, else seconds to wait."""
        now = time.monotonic()
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
        if tokens >= 1:
            self._remember(client, tokens - 1, now)
            return 0.0
        self._remember(client, tokens, now)
        return (1 - tokens) / self.per_second

    def _remember(self, client: str, tokens: float, now: float) -> None:
        if client not in self._buckets and len(self._buckets) >= _MAX_CLIENTS:
            full = [
                c
                for c, (t, w) in self._buckets.items()
                if t + (now - w) * self.per_second >= self.burst
            ]
            for c in full:
                del self._buckets[c]
            if len(self._buckets) >= _MAX_CLIENTS:
                self._buckets.clear()  # bounded memory beats a perfect memory of strangers
        self._buckets[client] = (tokens, now)


class KeyGate:
    """Admits requests whose key is valid; see the module's docstring."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.throttle = FailureThrottle(
            burst=settings.auth_failures_burst, per_second=settings.auth_failures_per_second
        )

    async def admit(self, scope: Scope, *, predict: bool) -> None:
        """Let the request in (its key left in its state) or raise the refusal.

        Args:
            scope: the request's.
            predict: a predict route: its scope is checked here too, through the predict
                routes' cached check (:func:`~service.predict.auth.predict_key`).

        Raises:
            ApiError: 401 (no key, or not valid), 403 (a predict route, without the scope),
                429 (a client whose keys keep failing, with ``Retry-After``).
        """
        token = bearer_token(scope)
        if token is None:
            raise key_required()
        if predict:
            from service.predict.auth import predict_key  # it imports the inference runtime

            try:
                key = await predict_key(Request(scope))
            except ApiError as exc:
                if exc.status_code == 401:
                    self._failed(scope, token)
                raise
        else:
            found = await run_in_threadpool(self._authenticate, token)
            if found is None:
                self._failed(scope, token)
                raise key_invalid()
            key = found
        scope.setdefault("state", {})[STATE_KEY] = key

    def _authenticate(self, token: str) -> ApiKey | None:
        with self.sessions() as session, committed(session):  # notes when it was last used
            return authenticate(session, token)

    def _failed(self, scope: Scope, token: str) -> None:
        client = scope.get("client")
        host = str(client[0]) if client else "unknown"
        wait = self.throttle.spend(host)
        log.warning(
            "refused API key %r… from %s on %s %r%s",
            token[:API_KEY_DISPLAY_CHARS],
            host,
            scope.get("method"),
            scope.get("path"),
            f" (throttled: retry after {wait:.1f} s)" if wait else "",
        )
        if wait:
            raise ApiError(
                429,
                "Too many requests with a key that is not valid from this client; "
                f"try again in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
