"""Reports over recorded runs: rows written straight into a migrated database, read back as
plain data; the experiment records; and migration 0003 on a database that has runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.orm import Session, sessionmaker

from core.reports.tables import table1
from jobs.records import (
    RecordNotFound,
    Run,
    RunStatus,
    alembic_config,
    make_engine,
    make_sessionmaker,
    upgrade_to_head,
)
from jobs.records import repository as records
from jobs.records.models import Experiment, ExperimentKind
from jobs.reports import load_experiment_runs, load_runs
from tests.core.reports.factory import record_run


@pytest.fixture(params=["sqlite", "postgresql"])
def sm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A session factory on a database at head: a SQLite file, or the throwaway PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    upgrade_to_head(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_table1_over_recorded_runs(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        r20 = record_run(session, "resnet20", accuracy=0.9125, epoch_seconds=30.0)
        p20 = record_run(
            session, "plain20", accuracy=0.9010, epoch_seconds=25.0, train_seconds=55.5
        )
        r110 = record_run(session, "resnet110", accuracy=0.9350, epoch_seconds=100.0)
        ids = [r110.id, r20.id, p20.id]
    with sm() as session:
        runs, missing = load_runs(session, [*ids, "0" * 32])
    assert missing == ["0" * 32]
    assert [r["architecture"] for r in runs] == ["resnet110", "resnet20", "plain20"]
    assert runs[1]["confusion_matrix"] == [[9, 1], [2, 8]]
    assert runs[1]["class_names"] == ["cat", "dog"]
    assert runs[1]["eval_images_per_second"] == 5000.0
    assert [e["epoch"] for e in runs[1]["epochs"]] == [1, 2]
    rows = table1(runs).rows
    assert [(r["model"], r["run_id"]) for r in rows] == [
        ("resnet110", ids[0]),
        ("resnet20", ids[1]),
        ("plain20", ids[2]),
    ]
    r110_row, r20_row, p20_row = rows
    assert r20_row["accuracy"] == pytest.approx(91.25)
    assert r20_row["precision"] == pytest.approx(90.25)
    assert r20_row["recall"] == pytest.approx(89.25)
    assert r20_row["f1"] == pytest.approx(88.25)
    assert r20_row["error"] == pytest.approx(8.75)
    assert r20_row["paper_error"] == 8.75
    assert r20_row["training_time"] == pytest.approx(60.0)  # the epochs' seconds
    assert p20_row["training_time"] == pytest.approx(55.5)  # the worker's train_seconds
    assert p20_row["paper_error"] is None
    assert r110_row["paper_error"] == 6.43
    assert r110_row["paper_error_text"] == "6.43 (best of 5; mean 6.61 ± 0.16)"
    assert r110_row["error"] == pytest.approx(6.5)


def test_experiment_records(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        experiment = records.create_experiment(
            session, name="depth", kind="grid", spec={"architectures": ["resnet20"]}
        )
        done = record_run(session, "resnet20", accuracy=0.9, epoch_seconds=1.0)
        records.attach_to_experiment(
            session, experiment, done, cell={"architecture": "resnet20", "seed": 0, "params": {}}
        )
        queued = records.create_run(
            session, architecture="resnet20", dataset="cifar10", config={"seed": 1}
        )
        records.attach_to_experiment(
            session, experiment, queued, cell={"architecture": "resnet20", "seed": 1, "params": {}}
        )
        running = records.create_run(
            session, architecture="resnet20", dataset="cifar10", config={"seed": 2}
        )
        records.attach_to_experiment(
            session, experiment, running, cell={"architecture": "resnet20", "seed": 2, "params": {}}
        )
        records.claim_run(session, running.id, worker_host="w")
        experiment_id = experiment.id
    with sm.begin() as session:
        row = records.get_experiment(session, experiment_id)
        assert row.kind == ExperimentKind.GRID
        assert [c["seed"] for c in row.cells] == [0, 1, 2]
        assert [c["run_id"] for c in row.cells] == [done.id, queued.id, running.id]
        assert {r.id for r in records.list_experiment_runs(session, experiment_id)} == {
            done.id,
            queued.id,
            running.id,
        }
        loaded = load_experiment_runs(session, experiment_id)
        assert [r["id"] for r in loaded] == [done.id, queued.id, running.id]
        experiment, cancelled = records.cancel_experiment(session, experiment_id)
        assert experiment.cancelled_at is not None
        assert sorted(cancelled) == sorted([queued.id, running.id])
    with sm.begin() as session:
        statuses = {
            r.id: (r.status, r.cancel_requested)
            for r in records.list_experiment_runs(session, experiment_id)
        }
        assert statuses[done.id] == (RunStatus.SUCCEEDED, False)
        assert statuses[queued.id] == (RunStatus.CANCELLED, True)
        assert statuses[running.id] == (RunStatus.RUNNING, True)  # its worker stops it
        first = records.get_experiment(session, experiment_id).cancelled_at
        _, again = records.cancel_experiment(session, experiment_id)
        assert again == [] and records.get_experiment(session, experiment_id).cancelled_at == first
        rows, total = records.list_experiments(session)
        assert total == 1 and rows[0].id == experiment_id
    with sm.begin() as session:  # deleting the experiment keeps its runs
        session.delete(session.get(Experiment, experiment_id))
    with sm() as session:
        assert session.get(Run, done.id).experiment_id is None  # type: ignore[union-attr]
    with pytest.raises(RecordNotFound), sm() as session:
        records.get_experiment(session, experiment_id)


def test_migration_0003_keeps_existing_runs_and_their_children(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0002")
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO runs (id, status, cancel_requested, architecture, dataset, config, "
        "created_at, attempts, max_attempts, epochs_completed) VALUES "
        "('r1', 'succeeded', 0, 'resnet20', 'cifar10', '{}', '2026-01-01 00:00:00', 1, 3, 1)"
    )
    db.execute(
        "INSERT INTO epoch_metrics (run_id, epoch, recorded_at) VALUES ('r1', 1, '2026-01-01')"
    )
    db.commit()
    command.upgrade(cfg, "0003")
    assert db.execute("SELECT id, experiment_id FROM runs").fetchall() == [("r1", None)]
    assert db.execute("SELECT count(*) FROM epoch_metrics").fetchone() == (1,)
    engine = make_engine(url)
    try:
        fks = {fk["name"]: fk for fk in inspect(engine).get_foreign_keys("runs")}
        assert fks["fk_runs_experiment_id_experiments"]["referred_table"] == "experiments"
        assert fks["fk_runs_experiment_id_experiments"]["options"]["ondelete"] == "SET NULL"
        assert "ix_runs_experiment_id" in {i["name"] for i in inspect(engine).get_indexes("runs")}
        # the copied runs table still cascades to its children
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM runs")
            assert conn.exec_driver_sql("SELECT count(*) FROM epoch_metrics").scalar() == 0
    finally:
        engine.dispose()
    db.execute(
        "INSERT INTO runs (id, status, cancel_requested, architecture, dataset, config, "
        "created_at, attempts, max_attempts, epochs_completed) VALUES "
        "('r2', 'queued', 0, 'resnet20', 'cifar10', '{}', '2026-01-01 00:00:00', 0, 3, 0)"
    )
    db.commit()
    command.downgrade(cfg, "0002")
    assert db.execute("SELECT id FROM runs").fetchall() == [("r2",)]
    assert "experiments" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()
