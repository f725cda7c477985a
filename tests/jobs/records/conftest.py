"""Fixtures for the record tests: throwaway servers, and a database per dialect.

Tests that take ``engine``/``sm``/``session`` run twice, on a SQLite file and on the throwaway
PostgreSQL, each time on a database of their own that the migrations brought to head. The
migrations run once per dialect, into a template that each test's database is copied from.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import make_engine, make_sessionmaker, upgrade_to_head
from tests.fixtures.servers import PostgresServer

DIALECTS = ["sqlite", "postgresql"]
PG_TEMPLATE = "records_at_head"


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh database on the throwaway PostgreSQL."""
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def _sqlite_at_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("records-template") / "head.db"
    upgrade_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_at_head(request: pytest.FixtureRequest) -> str:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    server.create_database(PG_TEMPLATE)
    upgrade_to_head(server.url_for(PG_TEMPLATE))  # leaves no connection open
    return PG_TEMPLATE


@pytest.fixture
def migrated_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own, already at the head migration."""
    if dialect == "sqlite":
        path = tmp_path / "records.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_at_head"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("_postgres_at_head")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    if not server.running:
        server.start()
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = server.create_database(name, template=template)
    yield url
    if not server.running:
        server.start()
    server.drop_database(name)


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    """An engine on a migrated database (see ``migrated_url``)."""
    eng = make_engine(migrated_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sm(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def session(sm: sessionmaker[Session]) -> Iterator[Session]:
    with sm() as s:
        yield s
