"""The Alembic migrations build exactly the tables the models describe, and undo them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, String, inspect

from jobs.records import Base, alembic_config, make_engine, upgrade_to_head

TABLES = {
    "api_keys", "datasets", "runs", "epoch_metrics", "evaluations", "artifacts",
    "model_versions", "experiments", "trial_rungs", "run_slots",
}  # fmt: skip
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_one_head_and_models_tables() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1  # a linear history: no branches to merge
    assert set(Base.metadata.tables) == TABLES


def test_head_matches_models(db_url: str) -> None:
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert _diff(engine) == []
        # and the comparison is not blind: a column the migrations lack is reported
        changed = MetaData(naming_convention=Base.metadata.naming_convention)
        for table in Base.metadata.tables.values():
            table.to_metadata(changed)
        changed.tables["runs"].append_column(Column("priority", Integer))
        changed.tables["runs"].c.architecture.type = String(length=80)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            kinds = sorted(str(d[0][0] if isinstance(d, list) else d[0]) for d in
                           compare_metadata(context, changed))  # fmt: skip
        assert kinds == ["add_column", "modify_type"]
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_to_base_removes_everything(db_url: str) -> None:
    upgrade_to_head(db_url)
    upgrade_to_head(db_url)  # already at head: nothing to do
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "base")
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() is None
        command.upgrade(cfg, "head")  # and back again
        assert _diff(engine) == []
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD
    finally:
        engine.dispose()


def test_upgrade_reads_the_environment_when_no_url_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from_env.db'}"
    monkeypatch.setenv("RESNET_DATABASE_URL", url)
    cfg = alembic_config("sqlite://")
    cfg.set_main_option("sqlalchemy.url", "")  # what the alembic command line sees
    command.upgrade(cfg, "head")
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["sqlite:///offline.db", "postgresql+psycopg://u@h/db"])
def test_offline_sql(url: str) -> None:
    out = io.StringIO()
    cfg = alembic_config(url)
    cfg.output_buffer = out
    command.upgrade(cfg, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE runs" in sql
    assert "ck_runs_run_status" in sql
    assert "ON DELETE CASCADE" in sql


def test_migration_0004_keeps_evaluations_recorded_before_it(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    cfg = alembic_config(f"sqlite:///{path}")
    command.upgrade(cfg, "0003")
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO runs (id, status, cancel_requested, architecture, dataset, config, "
        "created_at, attempts, max_attempts, epochs_completed) VALUES "
        "('r1', 'succeeded', 0, 'resnet20', 'cifar10', '{}', '2026-01-01 00:00:00', 1, 3, 1)"
    )
    db.execute(
        "INSERT INTO evaluations (id, run_id, split, status, created_at) VALUES "
        "('e1', 'r1', 'test', 'succeeded', '2026-01-01 00:00:00')"
    )
    db.commit()
    command.upgrade(cfg, "0004")
    row = db.execute(
        "SELECT id, predictions_uri, predictions_count, heartbeat_at, attempts FROM evaluations"
    ).fetchall()
    assert row == [("e1", None, None, None, 0)]  # no predictions kept: the API says so (404)
    command.downgrade(cfg, "0003")
    columns = {r[1] for r in db.execute("PRAGMA table_info(evaluations)")}
    assert not columns & {"predictions_uri", "predictions_count", "heartbeat_at", "attempts"}
    assert db.execute("SELECT id FROM evaluations").fetchall() == [("e1",)]
    db.close()


def test_migration_0005_gives_evaluations_recorded_before_it_max_attempts(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    cfg = alembic_config(f"sqlite:///{path}")
    command.upgrade(cfg, "0004")
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO runs (id, status, cancel_requested, architecture, dataset, config, "
        "created_at, attempts, max_attempts, epochs_completed) VALUES "
        "('r1', 'succeeded', 0, 'resnet20', 'cifar10', '{}', '2026-01-01 00:00:00', 1, 5, 1)"
    )
    db.execute(
        "INSERT INTO evaluations (id, run_id, split, status, created_at, attempts) VALUES "
        "('e1', 'r1', 'test', 'running', '2026-01-01 00:00:00', 2)"
    )
    db.commit()
    command.upgrade(cfg, "0005")
    rows = db.execute("SELECT id, attempts, max_attempts FROM evaluations").fetchall()
    assert rows == [("e1", 2, 3)]  # RESNET_MAX_ATTEMPTS' default, which the sweeper used
    command.downgrade(cfg, "0004")
    columns = {r[1] for r in db.execute("PRAGMA table_info(evaluations)")}
    assert "max_attempts" not in columns and "attempts" in columns
    assert db.execute("SELECT id, attempts FROM evaluations").fetchall() == [("e1", 2)]
    db.close()


def test_migration_0006_owners_and_deleted_versions_up_and_down(db_url: str) -> None:
    """On both dialects: rows made before 0006 are owned by no key; a deleted version's row
    outlives its run (its number stays taken); downgrading drops the tombstones only."""
    from sqlalchemy import text

    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0005")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO runs (id, status, cancel_requested, architecture, dataset, "
                    "config, created_at, attempts, max_attempts, epochs_completed) VALUES "
                    "(:id, 'succeeded', false, 'resnet20', 'cifar10', '{}', "
                    "'2026-01-01 00:00:00+00', 1, 3, 1)"
                ),
                [{"id": "r1"}, {"id": "r2"}],
            )
            conn.execute(
                text(
                    "INSERT INTO model_versions (name, version, run_id, created_at) VALUES "
                    "('m', 1, 'r1', '2026-01-01 00:00:00+00'), "
                    "('m', 2, 'r2', '2026-01-01 00:00:00+00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO datasets (id, name, kind, location, class_names, counts, "
                    "num_images, created_at) VALUES ('d1', 'pets', 'folder', 'pets', '[]', "
                    "'{}', 0, '2026-01-01 00:00:00+00')"
                )
            )
        command.upgrade(cfg, "0006")
        with engine.begin() as conn:
            owners = conn.execute(
                text("SELECT name, version, api_key_id, deleted_at FROM model_versions")
            ).all()
            assert sorted(owners) == [("m", 1, None, None), ("m", 2, None, None)]
            assert conn.execute(text("SELECT api_key_id FROM datasets")).all() == [(None,)]
            # delete version 2, then its run: the tombstone stays, without a run
            conn.execute(
                text("UPDATE model_versions SET deleted_at = created_at WHERE version = 2")
            )
            conn.execute(text("DELETE FROM runs WHERE id = 'r2'"))
            rows = conn.execute(text("SELECT version, run_id FROM model_versions")).all()
            assert sorted(rows) == [(1, "r1"), (2, None)]
        command.downgrade(cfg, "0005")
        with engine.begin() as conn:
            assert conn.execute(text("SELECT version, run_id FROM model_versions")).all() == [
                (1, "r1")
            ]
            columns = {c["name"] for c in inspect(conn).get_columns("model_versions")}
            assert not columns & {"api_key_id", "deleted_at"}
            assert "api_key_id" not in {c["name"] for c in inspect(conn).get_columns("datasets")}
            # and a run still takes its versions with it, as before 0006
            conn.execute(text("DELETE FROM runs WHERE id = 'r1'"))
            assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar() == 0
    finally:
        engine.dispose()


def test_migration_0008_runs_before_it_train_on_one_worker_and_slots_go_down(db_url: str) -> None:
    """On both dialects: a run recorded before 0008 gets ``workers`` 1; its slots cascade with
    it; downgrading drops the slots and the column, and keeps the run."""
    from sqlalchemy import text

    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0007")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO runs (id, status, cancel_requested, architecture, dataset, "
                    "config, created_at, attempts, max_attempts, epochs_completed) VALUES "
                    "(:id, 'queued', false, 'resnet20', 'cifar10', '{}', "
                    "'2026-01-01 00:00:00+00', 0, 3, 0)"
                ),
                [{"id": "r1"}, {"id": "r2"}],
            )
        command.upgrade(cfg, "0008")
        with engine.begin() as conn:
            assert sorted(conn.execute(text("SELECT id, workers FROM runs")).all()) == [
                ("r1", 1),
                ("r2", 1),
            ]
            conn.execute(text("INSERT INTO run_slots (run_id, slot) VALUES ('r1', 0), ('r2', 0)"))
            assert conn.execute(text("SELECT attempt FROM run_slots")).all() == [(0,), (0,)]
            conn.execute(text("DELETE FROM runs WHERE id = 'r2'"))
            assert conn.execute(text("SELECT run_id FROM run_slots")).all() == [("r1",)]
        command.downgrade(cfg, "0007")
        with engine.begin() as conn:
            assert "run_slots" not in inspect(conn).get_table_names()
            assert "workers" not in {c["name"] for c in inspect(conn).get_columns("runs")}
            assert conn.execute(text("SELECT id FROM runs")).all() == [("r1",)]
    finally:
        engine.dispose()
