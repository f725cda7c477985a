"""The predict routes' key check: ``require(Scope.PREDICT)``, kept off the database."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from jobs.records import ApiKey, Scope
from jobs.records.repository import hash_api_key
from service.deps import require
from service.inference.runtime import get_inference
from service.keygate import admitted_key

_check_predict_key = require(Scope.PREDICT)


async def predict_key(request: Request) -> ApiKey:
    """``require(Scope.PREDICT)``, with a key that passed trusted for ``predict_cache_ttl_s``.

    A prediction then costs no database round trip; a revoked key stops working within the
    TTL. Failures (401, 403) are never cached. The bearer token is read straight from the
    header (as ``HTTPBearer`` reads it): one dependency fewer to solve on every request.
    """
    admitted = admitted_key(request.scope)
    if admitted is not None and admitted.has_scope(Scope.PREDICT):
        return admitted  # checked at the door (service.keygate), by this very function
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
        return _check_predict_key.check_key(session, credentials)  # type: ignore[attr-defined]


predict_key.required_scope = Scope.PREDICT  # type: ignore[attr-defined]  # for the route walk
PredictKey = Annotated[ApiKey, Depends(predict_key)]
