"""The FastAPI application: ``create_app()`` builds it from one :class:`Settings`.

Run it with::

    python -m service.migrate                       # once, before the API starts
    uvicorn service.app:create_app --factory --host 0.0.0.0 --port 8000

The API process never imports TensorFlow: configs and architectures are validated with core's
plain-data modules, data is described with ``core.data`` (which loads TensorFlow only to build
pipelines), and jobs are sent to the workers by task name. Migrations are not run here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine, make_url

import core
from jobs.records import make_engine, make_sessionmaker
from jobs.settings import Settings, get_settings
from service.catalogue import Catalogue
from service.errors import install_error_handlers
from service.limits import RequestLimits
from service.metrics import Metrics, MetricsMiddleware
from service.openapi import use_resolved_openapi
from service.predict.dispatch import PredictDispatch
from service.queue import TaskQueue
from service.routes import (
    architectures,
    dashboard,
    datasets,
    experiments,
    health,
    models,
    predictions,
    reports,
    runs,
)

log = logging.getLogger(__name__)

# A database that does not answer must fail /readyz (and requests) in seconds, not minutes.
POSTGRES_CONNECT_TIMEOUT_S = 5

TAGS = [
    {"name": "runs", "description": "Queue training runs, follow them, cancel, evaluate."},
    {"name": "datasets", "description": "Register or upload data under the server's data root."},
    {"name": "architectures", "description": "The ResNet catalogue: size, cost, paper error."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics (no key)."},
]

DESCRIPTION = """
Train and evaluate ResNet image classifiers (He et al., 2016) through a Celery queue.

Every route under `/v1` needs an API key sent as `Authorization: Bearer rsk_…`, with a scope:
`read` for GETs, `train` to queue, cancel or delete runs and to register data; `admin` has
every scope. Create one with `python -m service.keys create NAME --scope read --scope train`.

Every error has one shape: `{"error": {"code", "message", "details": [{"field", "message",
"received"}]}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: the environment's, ``RESNET_*``).

    The database must already be at the head migration (``python -m service.migrate``).
    """
    settings = settings or get_settings()
    engine = _engine(settings)
    sessions = make_sessionmaker(engine)
    queue = TaskQueue(settings)
    metrics = Metrics(sessions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.close()
        engine.dispose()

    app = FastAPI(
        title="resnet-service",
        version=core.__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.queue = queue
    app.state.metrics = metrics
    app.state.catalogue = Catalogue()
    install_error_handlers(app)
    # First, so innermost: predict requests skip only what PredictDispatch's docstring lists,
    # and every middleware added after this line wraps them too.
    app.add_middleware(
        PredictDispatch, routes=models.router.routes, exception_handlers=app.exception_handlers
    )
    # models first: routes are matched in order (PredictDispatch leaves FastAPI the predict
    # requests it refuses)
    routers = (models, predictions, runs, experiments, reports, datasets, architectures, health)
    routes = [route for module in routers for route in module.router.routes]
    # Outside the predict dispatch, so predict requests pass it too; inside the metrics, so its
    # refusals are counted. Body size, key and read timeouts before any route reads a body.
    app.add_middleware(RequestLimits, settings=settings, sessions=sessions, routes=routes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (*routers, dashboard):
        app.include_router(module.router)
    use_resolved_openapi(app)
    return app


def _engine(settings: Settings) -> Engine:
    url = make_url(settings.db_url)
    if url.get_backend_name() == "postgresql":
        return make_engine(url, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
    return make_engine(url)
