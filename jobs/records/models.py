"""The record tables: runs, their epochs, evaluations and artifacts, datasets and API keys.

Portable between SQLite and PostgreSQL: JSON columns are SQLAlchemy's ``JSON``, statuses are
strings guarded by CHECK constraints (no native enum types to migrate), and every timestamp is
an aware UTC ``datetime`` on the Python side whatever the database stores.

The schema is owned by Alembic (``migrations/``): a change here needs a migration, and the tests
check that the two agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from jobs.ids import new_id

# Named constraints: Alembic can then drop and alter them on every backend (SQLite batch mode
# included), and the migration names match what the models would create.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores text without an offset, so values are
    converted to UTC before they are written (which also keeps SQLite's text comparisons, as in
    ``heartbeat_at < :cutoff``, chronological) and marked UTC when they are read back.
    Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    # A trial of an adaptive search (ASHA, median stopping) waiting for the search's decision:
    # not started yet (no free slot), or stopped at a rung until it is promoted or stopped early.
    # No worker holds it and none claims it; the search queues it again (jobs.records.trials).
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
# Runs that still have work to do: they count against quotas and hold their dataset.
ACTIVE_RUN_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED})


class EvaluationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ArtifactKind(enum.StrEnum):
    MODEL = "model"
    CHECKPOINT = "checkpoint"
    TENSORBOARD = "tensorboard"
    HISTORY = "history"
    METRICS = "metrics"
    EXPORT = "export"  # SavedModel / ONNX exports of the trained model


class Scope(enum.StrEnum):
    READ = "read"
    TRAIN = "train"
    PREDICT = "predict"
    ADMIN = "admin"


def _str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as the values ("queued"), not the member names ("QUEUED"), in a VARCHAR with a
    # CHECK constraint: adding a member is a constraint change, not a native type migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


def _json() -> JSON:
    # None is stored as SQL NULL, not as the JSON text 'null' (which IS NULL would miss).
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - read by SQLAlchemy


class ApiKey(Base):
    """A client's key. Only the SHA-256 of the secret is stored; the secret is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))  # the secret's first characters, for display
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    scopes: Mapped[list[str]] = mapped_column(_json(), default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    def has_scope(self, scope: str) -> bool:
        """Whether the key grants ``scope`` (``admin`` grants every scope)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes


class DatasetRecord(Base):
    """A registered dataset: where it lives and what is in it."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # folder, tfrecord, arrays, builtin, ...
    location: Mapped[str] = mapped_column(Text)
    class_names: Mapped[list[str]] = mapped_column(_json(), default=list)
    counts: Mapped[dict[str, Any]] = mapped_column(_json(), default=dict)  # per split / per class
    num_images: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The key that registered it (its owner: see jobs.records.owners); None: admin-only.
    api_key_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("api_keys.id", ondelete="SET NULL")
    )


class Run(Base):
    """One training run, from queued to a terminal status."""

    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "status"),
        Index(None, "architecture"),
        Index(None, "dataset"),
        Index(None, "created_at"),
        Index(None, "experiment_id"),
        Index(None, "api_key_id"),  # quotas count a key's runs
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    status: Mapped[RunStatus] = mapped_column(
        _str_enum(RunStatus, "run_status"), default=RunStatus.QUEUED
    )
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    architecture: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(1024))  # the data spec the config names
    dataset_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("datasets.id", ondelete="SET NULL")
    )
    config: Mapped[dict[str, Any]] = mapped_column(_json())  # the full validated training config
    api_key_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]  # start of the latest attempt
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    # epoch, epochs, batch, batches, fraction, eta_seconds, images_per_second, ...
    progress: Mapped[dict[str, Any] | None] = mapped_column(_json())
    epochs_planned: Mapped[int | None] = mapped_column(Integer)
    epochs_completed: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(_json())  # test metrics summary
    out_dir: Mapped[str | None] = mapped_column(Text)  # run directory / artifact prefix
    # How many workers train it together (issue 13); above 1 they meet in ``slots``.
    workers: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    # Above one worker: the plan it trains by (global batch, scaling, sharding; the chief adds
    # the workers' addresses when an attempt starts). core.training.distribution_plan.
    distribution: Mapped[dict[str, Any] | None] = mapped_column(_json())
    # The experiment (grid or search) this run is a cell of, if any.
    experiment_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("experiments.id", ondelete="SET NULL")
    )

    epochs: Mapped[list[EpochMetric]] = relationship(
        back_populates="run",
        order_by="EpochMetric.epoch",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    evaluations: Mapped[list[Evaluation]] = relationship(
        back_populates="run",
        order_by="Evaluation.created_at",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="run",
        order_by="Artifact.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    slots: Mapped[list[RunSlot]] = relationship(
        back_populates="run",
        order_by="RunSlot.slot",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, status={self.status!r}, architecture={self.architecture!r})"


class RunSlot(Base):
    """One worker's place in a multi-worker run: slot 0 is the chief (see jobs.records.slots).

    Free while ``claimed_at`` is None. A claim writes the worker's host and the port its
    collective-ops server listens on, and increments ``attempt``, which fences that claim's
    heartbeats: a worker whose slot was released and claimed again cannot beat for it.
    """

    __tablename__ = "run_slots"

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    claimed_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    run: Mapped[Run] = relationship(back_populates="slots")


class EpochMetric(Base):
    """One finished epoch of a run (1-based ``epoch``); at most one row per (run, epoch)."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    images_per_second: Mapped[float | None] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="epochs")


class Evaluation(Base):
    """Scoring a run's model on a split; the headline metrics are also columns for querying."""

    __tablename__ = "evaluations"
    __table_args__ = (Index(None, "run_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(1024))  # None: the run's own dataset
    status: Mapped[EvaluationStatus] = mapped_column(
        _str_enum(EvaluationStatus, "evaluation_status"), default=EvaluationStatus.QUEUED
    )
    # Everything core returns: per-class metrics, the confusion matrix, ...
    metrics: Mapped[dict[str, Any] | None] = mapped_column(_json())
    accuracy: Mapped[float | None] = mapped_column(Float)
    precision_macro: Mapped[float | None] = mapped_column(Float)
    recall_macro: Mapped[float | None] = mapped_column(Float)
    f1_macro: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    images_per_second: Mapped[float | None] = mapped_column(Float)
    # The model's output on every image (core.evaluation.Predictions), written by the worker:
    # any metric can be recomputed from it without the model.
    predictions_uri: Mapped[str | None] = mapped_column(Text)
    predictions_count: Mapped[int | None] = mapped_column(Integer)
    # As for runs: a worker that dies mid-evaluation stops beating, and the sweeper requeues it.
    heartbeat_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # A column, as for runs: the job lifecycle gives up on a crash loop the same way for both.
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default=text("3"))
    worker_host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="evaluations")


class Artifact(Base):
    """A file a run produced: the model, checkpoints, TensorBoard logs, history, metrics."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "kind", "uri"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[ArtifactKind] = mapped_column(_str_enum(ArtifactKind, "artifact_kind"))
    uri: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="artifacts")


class ModelVersion(Base):
    """A succeeded run promoted to a named model: ``cifar10-resnet56`` version 3.

    Versions of a name count up from 1 and are never reused; a version always names the same
    run. A run that a live version names cannot be deleted; a deleted version stays as a
    tombstone (``deleted_at``, and no run once its run is deleted) that keeps its number taken.
    Every query of live versions filters ``deleted_at IS NULL``.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"), Index(None, "run_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    # NULL only on a tombstone whose run was deleted after the version was.
    run_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The key that promoted it (its owner: see jobs.records.owners); None: admin-only.
    api_key_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    deleted_at: Mapped[datetime | None]

    # Live versions always have their run (see above).
    run: Mapped[Run] = relationship()

    def __repr__(self) -> str:
        return f"ModelVersion(name={self.name!r}, version={self.version}, run_id={self.run_id!r})"


class ExperimentKind(enum.StrEnum):
    GRID = "grid"
    RANDOM = "random"


class Experiment(Base):
    """A set of runs made together: a grid (architectures × seeds × hyperparameters) or a
    random search. Each cell is one run (``Run.experiment_id``); ``cells`` keeps which values
    each run was given, so results can be grouped over seeds."""

    __tablename__ = "experiments"
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[ExperimentKind] = mapped_column(_str_enum(ExperimentKind, "experiment_kind"))
    spec: Mapped[dict[str, Any]] = mapped_column(_json())  # the request, as validated
    # [{"run_id", "architecture", "seed", "params": {dotted path: value}}], in creation order
    cells: Mapped[list[dict[str, Any]]] = mapped_column(_json(), default=list)
    api_key_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"Experiment(id={self.id!r}, name={self.name!r}, kind={self.kind!r})"


class TrialRung(Base):
    """A trial's report at a rung of an adaptive search, and what the search decided.

    ASHA: one row per rung a trial reached (``rung`` 0, 1, ... at ``epoch`` grace × η**k);
    median stopping: one row per epoch judged (``rung`` is the epoch). ``decision`` is
    ``pending`` (paused until enough trials have reported), ``promoted`` or ``stopped``, with
    ``reason`` in words. At most one row per (run, rung): a trial resumed after a crash that
    reports the same rung again finds the decision already made.
    """

    __tablename__ = "trial_rungs"
    __table_args__ = (UniqueConstraint("run_id", "rung"), Index(None, "experiment_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("experiments.id", ondelete="CASCADE")
    )
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"))
    rung: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
