"""Request dependencies: settings, a database session per request, the queue, and API-key auth.

Routes take them as ``Annotated`` aliases::

    def get_run(run_id: str, session: SessionDep, key: ReadKey) -> RunPublic: ...

Writes are committed explicitly with :func:`committed` (``jobs.records.db``), never inline, so a
route reads as "change the records, commit, then tell the workers".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import ApiKey, Scope
from jobs.records.db import committed
from jobs.records.repository import authenticate
from jobs.settings import Settings
from service.errors import ApiError
from service.keygate import admitted_key
from service.queue import TaskQueue


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (not the environment's: tests pass their own)."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for this request, closed (and anything uncommitted rolled back) after it."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as session:
        yield session


def get_queue(request: Request) -> TaskQueue:
    queue: TaskQueue = request.app.state.queue
    return queue


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key (`python -m service.keys create NAME --scope read`), sent as "
    "`Authorization: Bearer rsk_…`. Scopes: read, train, predict, admin (admin has them all).",
)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(scope: Scope) -> Callable[..., ApiKey]:
    """A dependency that returns the request's API key if it grants ``scope``.

    No key, or one that is unknown or revoked: 401 with ``WWW-Authenticate: Bearer``. A valid
    key without the scope: 403. ``admin`` grants every scope.
    """

    def dependency(request: Request, session: SessionDep, credentials: _Credentials) -> ApiKey:
        return check_key(session, credentials, admitted=admitted_key(request.scope))

    def check_key(
        session: Session,
        credentials: HTTPAuthorizationCredentials | None,
        *,
        admitted: ApiKey | None = None,
    ) -> ApiKey:
        if admitted is not None:  # looked up at the door (service.keygate), before the body
            key: ApiKey | None = admitted
        elif credentials is None or not credentials.credentials:
            raise ApiError(
                401,
                "An API key is required: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            with committed(session):  # authenticate() notes when the key was last used
                key = authenticate(session, credentials.credentials)
        if key is None:
            raise ApiError(
                401,
                "The API key is not valid (unknown or revoked)",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not key.has_scope(scope):
            raise ApiError(
                403,
                f"The API key lacks the {scope.value!r} scope",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope" scope="{scope}"'},
            )
        return key

    dependency.__name__ = f"require_{scope.value}"
    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the route walk test
    dependency.check_key = check_key  # type: ignore[attr-defined]  # the predict routes' check
    return dependency


ReadKey = Annotated[ApiKey, Depends(require(Scope.READ))]
TrainKey = Annotated[ApiKey, Depends(require(Scope.TRAIN))]
