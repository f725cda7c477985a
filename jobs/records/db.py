"""Engines, sessions and migrations for the record database (SQLite or PostgreSQL).

The URL comes from the caller (the service's and the worker's settings); nothing here reads the
environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 30_000

# The repository root holds alembic.ini and migrations/ (jobs/records/db.py → parents[2]).
REPO_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"
MIGRATIONS_DIR = REPO_ROOT / "migrations"


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine configured for the record tables.

    SQLite: WAL journal (readers do not block the writer), a 30 s busy timeout (a writer waits
    for another writer rather than failing), foreign keys enforced (``ON DELETE CASCADE``
    needs them), and connections usable from any thread. An in-memory database is shared by
    all sessions of the engine. PostgreSQL: connections are checked before use, so the engine
    survives a database restart.

    Args:
        url: A SQLAlchemy URL, e.g. ``sqlite:///./resnet.db`` or
            ``postgresql+psycopg://user:pw@host/db``.
        **kwargs: Passed on to :func:`sqlalchemy.create_engine` (e.g. ``echo=True``).
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        if url.database in (None, "", ":memory:"):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``.

    Objects stay readable after commit (``expire_on_commit=False``), so a run returned from a
    committed :func:`session_scope` can still be turned into a response.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def committed(session: Session) -> Iterator[Session]:
    """Commit what the block changed in ``session``, or roll it back if the block raises.

    Example:
        >>> with committed(session):
        ...     run = create_run(session, ...)
    """
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


@contextmanager
def session_scope(sm: sessionmaker[Session]) -> Iterator[Session]:
    """A new session that commits when the block ends and rolls back if it raises.

    Example:
        >>> with session_scope(sm) as session:
        ...     run = create_run(session, architecture="resnet20", dataset="cifar10", config={})
    """
    with sm() as session, committed(session):
        yield session


def alembic_config(url: str | URL) -> Config:
    """The Alembic config of this repository, pointed at ``url``.

    ``script_location`` is set to the repository's ``migrations/`` whatever the working
    directory, and the URL is the one given here: ``alembic.ini`` holds none.
    """
    from alembic.config import Config

    if not MIGRATIONS_DIR.is_dir():
        raise FileNotFoundError(
            f"Alembic migrations not found at {MIGRATIONS_DIR}: the records need the repository "
            "checkout (an editable install), not a bare wheel"
        )
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    # ConfigParser interpolates '%': a URL-encoded password must survive it.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # Called from an application: leave its logging alone (env.py checks this).
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade_to_head(url: str | URL) -> None:
    """Create or upgrade the record tables at ``url`` to the newest migration.

    Run it before the service or the workers start (never inside a request); it is a no-op on a
    database that is already at head.
    """
    from alembic import command

    command.upgrade(alembic_config(url), "head")
