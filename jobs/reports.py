"""Run records as :class:`core.reports.runs.RunData`: the one shape every report is computed from.

The reports themselves (``core.reports``) are pure functions over those dicts; this module is
the only place that reads them from the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.reports.runs import EpochRow, RunData, architecture_info, label_runs
from core.training.hooks import EPOCH_METRICS
from jobs.records.models import EpochMetric, Evaluation, EvaluationStatus, Run, RunStatus


def run_data(
    run: Run,
    epochs: Iterable[EpochMetric] = (),
    evaluations: Iterable[Evaluation] = (),
) -> RunData:
    """A run's records as :class:`RunData`.

    The test metrics are the run's latest succeeded evaluation on its own test split when there
    is one (it has every metric, the confusion matrix included), else the summary the worker
    stored when the run finished. Training time is the worker's ``train_seconds``, else the sum
    of the epochs' seconds.
    """
    config = dict(run.config or {})
    depth, kind, family = architecture_info(run.architecture)
    summary = dict(run.metrics or {})
    evaluation = _test_evaluation(evaluations)
    metrics = dict(summary)
    confusion: list[list[int]] | None = None
    class_names: list[str] | None = None
    eval_speed: float | None = None
    if evaluation is not None and evaluation.metrics:
        metrics.update({k: v for k, v in evaluation.metrics.items() if k != "per_class"})
        confusion = evaluation.metrics.get("confusion_matrix")
        per_class = evaluation.metrics.get("per_class") or []
        class_names = [str(c.get("class")) for c in per_class] or None
        eval_speed = evaluation.images_per_second
    metrics.pop("confusion_matrix", None)
    rows = [_epoch_row(e) for e in epochs]
    train_seconds = _number(summary.get("train_seconds"))
    if train_seconds is None and rows:
        seconds = [r.get("seconds") for r in rows]
        if all(s is not None for s in seconds):
            train_seconds = float(sum(s for s in seconds if s is not None))
    environment = summary.get("environment")
    seed = config.get("seed")
    return RunData(
        id=run.id,
        label=run.architecture,
        architecture=run.architecture,
        dataset=run.dataset,
        status=run.status.value if isinstance(run.status, RunStatus) else str(run.status),
        depth=depth,
        kind=kind,
        family=family,
        seed=seed if isinstance(seed, int) else None,
        config=config,
        metrics=metrics,
        train_seconds=train_seconds,
        epochs_planned=run.epochs_planned,
        epochs=rows,
        progress=dict(run.progress) if run.progress else None,
        confusion_matrix=confusion,
        class_names=class_names,
        eval_images_per_second=eval_speed,
        experiment_id=getattr(run, "experiment_id", None),
        environment=environment if isinstance(environment, dict) else None,
        created_at=_iso(run.created_at),
        started_at=_iso(run.started_at),
        finished_at=_iso(run.finished_at),
    )


def load_runs(session: Session, run_ids: Sequence[str]) -> tuple[list[RunData], list[str]]:
    """The runs with these ids, in the order given, and the ids that do not exist."""
    wanted = list(dict.fromkeys(run_ids))
    rows = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(wanted)))}
    missing = [i for i in wanted if i not in rows]
    return _with_children(session, [rows[i] for i in wanted if i in rows]), missing


def load_experiment_runs(session: Session, experiment_id: str) -> list[RunData]:
    """An experiment's runs, oldest first."""
    rows = list(
        session.scalars(
            select(Run).where(Run.experiment_id == experiment_id).order_by(Run.created_at, Run.id)
        )
    )
    return _with_children(session, rows)


def _with_children(session: Session, runs: list[Run]) -> list[RunData]:
    ids = [r.id for r in runs]
    epochs: dict[str, list[EpochMetric]] = {i: [] for i in ids}
    evaluations: dict[str, list[Evaluation]] = {i: [] for i in ids}
    if ids:
        for e in session.scalars(
            select(EpochMetric)
            .where(EpochMetric.run_id.in_(ids))
            .order_by(EpochMetric.run_id, EpochMetric.epoch)
        ):
            epochs[e.run_id].append(e)
        for v in session.scalars(
            select(Evaluation)
            .where(Evaluation.run_id.in_(ids))
            .order_by(Evaluation.created_at, Evaluation.id)
        ):
            evaluations[v.run_id].append(v)
    return label_runs([run_data(r, epochs[r.id], evaluations[r.id]) for r in runs])


def _test_evaluation(evaluations: Iterable[Evaluation]) -> Evaluation | None:
    found = None
    for e in evaluations:  # oldest first: keep the latest
        if e.status == EvaluationStatus.SUCCEEDED and e.split == "test" and e.dataset is None:
            found = e
    return found


def _epoch_row(e: EpochMetric) -> EpochRow:
    row = EpochRow(epoch=e.epoch)
    for key in EPOCH_METRICS:
        row[key] = getattr(e, key)  # type: ignore[literal-required]
    return row


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
