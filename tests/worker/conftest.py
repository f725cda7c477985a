"""Fixtures for the worker tests: real Celery workers against throwaway PostgreSQL + Redis, or
against the embedded SQLite + filesystem queue (see :mod:`tests.worker.harness`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import make_engine, make_sessionmaker, upgrade_to_head
from tests.fixtures.servers import PostgresServer, RedisServer
from tests.worker.harness import (
    TEMPLATE_DB,
    Stack,
    embedded_stack_context,
    next_redis_db,
    sender_app,
    stack_settings,
)

# postgres_server and redis_server come from tests/conftest.py: one of each per test session.


@pytest.fixture(scope="module")
def pg_template(postgres_server: PostgresServer) -> str:
    """A database at the head migration that each stack's database is copied from."""
    if not postgres_server.running:
        postgres_server.start()
    postgres_server.drop_database(TEMPLATE_DB)
    postgres_server.create_database(TEMPLATE_DB)
    upgrade_to_head(postgres_server.url_for(TEMPLATE_DB))
    return TEMPLATE_DB


@contextlib.contextmanager
def redis_stack_context(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    template: str,
    workdir: Path,
    **overrides: Any,
) -> Iterator[Stack]:
    """PostgreSQL records and a Redis broker, as in production; ``overrides`` are settings."""
    name = f"worker_{uuid.uuid4().hex[:12]}"
    db_url = postgres_server.create_database(name, template=template)
    broker = redis_server.url.rsplit("/", 1)[0] + f"/{next_redis_db()}"
    redis.Redis.from_url(broker).flushdb()  # nothing left from an earlier stack
    settings = stack_settings(
        state_dir=workdir / "state", database_url=db_url, broker_url=broker, **overrides
    )
    stack = Stack(settings, make_sessionmaker(make_engine(db_url)), sender_app(settings), workdir)
    try:
        yield stack
    finally:
        stack.close()
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def redis_stack(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    pg_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """One stack and one worker shared by the tests of a module (they run one after another)."""
    with redis_stack_context(
        postgres_server, redis_server, pg_template, tmp_path_factory.mktemp("redis-stack")
    ) as stack:
        stack.start_worker()
        yield stack


@pytest.fixture
def fresh_redis_stack(
    postgres_server: PostgresServer, redis_server: RedisServer, pg_template: str, tmp_path: Path
) -> Iterator[Stack]:
    """A stack of the test's own, without a worker yet."""
    with redis_stack_context(postgres_server, redis_server, pg_template, tmp_path) as stack:
        yield stack


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Iterator[Stack]:
    """The embedded default: SQLite and a filesystem queue under the state folder."""
    with embedded_stack_context(tmp_path) as stack:
        yield stack


@pytest.fixture(params=["sqlite", "postgresql"])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on migrated records of the test's own, no broker and no worker process: a SQLite
    file, then a database on the throwaway PostgreSQL (for a worker's logic driven in process)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
        upgrade_to_head(url)
        engine = make_engine(url)
        yield make_sessionmaker(engine)
        engine.dispose()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template: str = request.getfixturevalue("pg_template")
    name = f"records_{uuid.uuid4().hex[:12]}"
    engine = make_engine(server.create_database(name, template=template))
    yield make_sessionmaker(engine)
    engine.dispose()
    server.drop_database(name)
