"""Fixtures for the API tests: a real SQLite file at head per test, the app, keys, and Redis.

Each test gets its own state folder (database, filesystem broker, data root) under tmp_path; the
database is a copy of one migrated once per session. Enqueueing goes to the embedded
filesystem broker unless a test asks for the throwaway Redis (``redis_settings``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
from jobs.records import repository as records
from jobs.settings import Settings
from service.app import create_app
from tests.fixtures.servers import RedisServer

UPLOAD_LIMIT = 64 * 1024


@pytest.fixture(scope="session")
def _db_at_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("service-db-template") / "head.db"
    upgrade_to_head(f"sqlite:///{path}")
    return path


def make_settings(tmp_path: Path, template: Path, **overrides: object) -> Settings:
    """Settings for one test: its own database copy, broker folder and data root."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    db = state / "resnet.db"
    if not db.exists():
        shutil.copyfile(template, db)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "state_dir": state,
        "database_url": f"sqlite:///{db}",
        "data_root": data,
        "max_upload_bytes": UPLOAD_LIMIT,
        # Not the default (3), so a test can tell the setting from a column default.
        "max_attempts": 4,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, _db_at_head: Path) -> Settings:
    return make_settings(tmp_path, _db_at_head)


@pytest.fixture
def redis_settings(
    tmp_path: Path,
    _db_at_head: Path,
    redis_server: RedisServer,
) -> Settings:
    """Settings whose broker is the throwaway Redis, emptied first."""
    import redis

    if not redis_server.running:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushdb()
    return make_settings(tmp_path, _db_at_head, broker_url=redis_server.url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def db(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory on the test's database, for arranging and checking records."""
    engine = make_engine(settings.db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def make_key(db: sessionmaker[Session]) -> Callable[..., dict[str, str]]:
    """``make_key("read", "train")`` → headers carrying a new key with those scopes."""

    def make(*scopes: str, name: str = "test") -> dict[str, str]:
        with session_scope(db) as session:
            _, secret = records.create_api_key(session, name, scopes)
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def admin(make_key: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_key("admin", name="admin")


def write_image_folder(root: Path, classes: dict[str, int], size: int = 8) -> Path:
    """Class folders of tiny PNGs: ``{"cat": 3}`` → root/cat/0.png … 2.png."""
    from PIL import Image

    for i, (name, count) in enumerate(sorted(classes.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(count):
            colour = (40 * i % 256, 30 * j % 256, 200)
            Image.new("RGB", (size, size), colour).save(folder / f"{j}.png")
    return root


@pytest.fixture
def image_folder() -> Callable[..., Path]:
    return write_image_folder
