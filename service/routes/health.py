"""Health and metrics, without an API key: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.errors import ApiError, ErrorDetail
from service.metrics import Metrics
from service.queue import TaskQueue
from service.routes import error_responses
from service.schemas import HealthPublic, ReadyPublic

router = APIRouter(tags=["health"])

# Paths that need no API key (with FastAPI's docs); the auth tests walk every other route.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@router.get("/healthz", summary="The process is alive")
def healthz() -> HealthPublic:
    return HealthPublic()


@router.get(
    "/readyz",
    summary="The database and the broker are reachable",
    responses=error_responses(503),
)
def readyz(request: Request) -> ReadyPublic:
    """200 when a ``SELECT 1`` and a broker connection both succeed; otherwise 503 whose
    details name each failed check (``database``, ``broker``)."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    queue: TaskQueue = request.app.state.queue
    failures: list[ErrorDetail] = []
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        failures.append(ErrorDetail(field="database", message=_describe(exc)))
    try:
        queue.check()
    except Exception as exc:
        failures.append(ErrorDetail(field="broker", message=_describe(exc)))
    if failures:
        names = ", ".join(f.field or "" for f in failures)
        raise ApiError(503, f"Not ready: {names} unreachable", code="not_ready", details=failures)
    return ReadyPublic(checks={"database": "ok", "broker": "ok"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


def _describe(exc: Exception) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:300]
