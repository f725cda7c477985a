"""Run records: the typed ORM tables, engines and sessions, and the few functions that change them.

Both doors (the FastAPI service and the Celery worker) use this package; it imports neither,
nor FastAPI nor Celery. The schema is created and changed only by the Alembic migrations in
``migrations/`` (see :func:`jobs.records.db.upgrade_to_head`).
"""

from jobs.records.db import (
    alembic_config,
    make_engine,
    make_sessionmaker,
    session_scope,
    upgrade_to_head,
)
from jobs.records.errors import RecordConflict, RecordError, RecordNotFound
from jobs.records.models import (
    ApiKey,
    Artifact,
    ArtifactKind,
    Base,
    DatasetRecord,
    EpochMetric,
    Evaluation,
    EvaluationStatus,
    Run,
    RunStatus,
    Scope,
)

__all__ = [
    "ApiKey",
    "Artifact",
    "ArtifactKind",
    "Base",
    "DatasetRecord",
    "EpochMetric",
    "Evaluation",
    "EvaluationStatus",
    "RecordConflict",
    "RecordError",
    "RecordNotFound",
    "Run",
    "RunStatus",
    "Scope",
    "alembic_config",
    "make_engine",
    "make_sessionmaker",
    "session_scope",
    "upgrade_to_head",
]
