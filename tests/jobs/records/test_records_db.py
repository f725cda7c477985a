"""Engines, sessions and the UTC datetime column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import Run, make_engine, session_scope
from jobs.records.repository import create_run, get_run


def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_shared_between_sessions() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).scalar() == 1
    finally:
        engine.dispose()


def test_postgres_engine_pre_pings() -> None:
    engine = make_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    assert engine.pool._pre_ping


def test_session_scope_commits_or_rolls_back(sm: sessionmaker[Session]) -> None:
    with session_scope(sm) as s:
        kept = create_run(s, architecture="resnet20", dataset="cifar10", config={}).id
    with pytest.raises(RuntimeError), session_scope(sm) as s:
        create_run(s, architecture="resnet20", dataset="gone", config={})
        raise RuntimeError("boom")
    with sm() as s:
        assert s.scalars(select(Run.id)).all() == [kept]


def test_datetimes_are_aware_utc(sm: sessionmaker[Session], engine: Engine) -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    with session_scope(sm) as s:
        run_id = create_run(s, architecture="resnet20", dataset="cifar10", config={}).id
        get_run(s, run_id).heartbeat_at = moment
    with sm() as s:
        run = get_run(s, run_id)
        assert run.heartbeat_at == moment
        assert run.heartbeat_at is not None and run.heartbeat_at.tzinfo == UTC
        assert run.heartbeat_at.hour == 12
        assert run.created_at.tzinfo == UTC
        assert abs(datetime.now(UTC) - run.created_at) < timedelta(minutes=1)
    with sm() as s:
        run = get_run(s, run_id)
        run.heartbeat_at = datetime(2024, 5, 1)  # naive: refused, not guessed
        with pytest.raises(Exception, match="naive datetime"):
            s.flush()


def test_the_epoch_table_has_a_column_per_epoch_metric() -> None:
    # The ORM keeps typed columns of its own; they must stay core's EPOCH_METRICS, in order.
    from core.training.hooks import EPOCH_METRICS
    from jobs.records.models import EpochMetric

    columns = [c.name for c in EpochMetric.__table__.columns]
    assert tuple(c for c in columns if c not in {"id", "run_id", "epoch", "recorded_at"}) == (
        EPOCH_METRICS
    )
