"""Small statement helpers the record modules share."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, Executable, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from jobs.records.errors import RecordNotFound
from jobs.records.models import Base

M = TypeVar("M", bound=Base)


def changed(session: Session, statement: Executable) -> int:
    """Run a Core UPDATE/DELETE and return how many rows it changed."""
    result = session.execute(statement, execution_options={"synchronize_session": False})
    return cast(CursorResult[Any], result).rowcount


def get_row(session: Session, model: type[M], record_id: str | int, *, fresh: bool = True) -> M:
    """The row with this primary key.

    Raises:
        RecordNotFound: No such row.
    """
    # populate_existing: a conditional UPDATE just changed the row behind the identity map.
    row = session.get(model, record_id, populate_existing=fresh)
    if row is None:
        raise RecordNotFound(model.__name__, record_id)
    return row


def ensure_exists(session: Session, model: type[Base], record_id: str) -> None:
    """Raise :class:`RecordNotFound` unless a row of ``model`` has this id (loads nothing)."""
    id_column = getattr(model, "id")  # noqa: B009 - every record table has an ``id``
    if not session.scalar(select(exists().where(id_column == record_id))):
        raise RecordNotFound(model.__name__, record_id)


def dialect_insert(session: Session, model: type[Base]) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update`` on SQLite and PostgreSQL."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(
        f"Unsupported database dialect: {name!r}. Expected sqlite or postgresql"
    )


def newest_first(
    session: Session,
    model: type[M],
    *conditions: ColumnElement[bool],
    limit: int,
    offset: int,
) -> tuple[list[M], int]:
    """A page of the rows that match ``conditions``, newest first, and how many match in all.

    Rows of the same ``created_at`` are ordered by id, so that pages never overlap.
    """
    table: Any = model  # every paged table has ``id`` and ``created_at``
    total = session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
    rows = session.scalars(
        select(model)
        .where(*conditions)
        .order_by(table.created_at.desc(), table.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), int(total)


def float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
