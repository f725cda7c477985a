"""Runs as plain data: the one shape every table, figure and bundle is computed from.

Reports never touch the ORM: :func:`run_data` turns a run's records into a :class:`RunData`
dict once, and everything downstream is a pure function over those dicts, so it can be tested
(and used from a notebook) without a database. :func:`load_runs` and
:func:`load_experiment_runs` read them from a session.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models.specs import parse_architecture
from core.records.models import EpochMetric, Evaluation, EvaluationStatus, Run, RunStatus

EPOCH_KEYS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
    "images_per_second",
)

# Config keys that do not change what is learned: runs that differ only in these share a recipe.
NOT_RECIPE = frozenset(
    {"seed", "progress_every", "tensorboard", "keep_epoch_checkpoints", "strategy", "xla"}
)


class EpochRow(TypedDict, total=False):
    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float | None
    seconds: float | None
    images_per_second: float | None


class RunData(TypedDict, total=False):
    """One run, as reports see it.

    Only ``id`` and ``architecture`` are required by every function; the rest may be missing or
    ``None`` and each table or figure says what it needs.
    """

    id: str
    label: str  # unique within one report: "resnet20", or "resnet20 s1" for seed 1
    architecture: str
    dataset: str
    status: str
    depth: int | None
    kind: str | None  # resnet, plain, preact, wide, resnext
    family: str | None  # cifar, imagenet
    seed: int | None
    config: dict[str, Any]
    metrics: dict[str, Any]  # test metrics: the run's summary or its test evaluation
    train_seconds: float | None
    epochs_planned: int | None
    epochs: list[EpochRow]
    progress: dict[str, Any] | None
    confusion_matrix: list[list[int]] | None
    class_names: list[str] | None
    eval_images_per_second: float | None
    experiment_id: str | None
    environment: dict[str, Any] | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


def architecture_info(name: str) -> tuple[int | None, str | None, str | None]:
    """``(depth, kind, family)`` of an architecture name, or ``None``s for an unknown one."""
    try:
        spec = parse_architecture(name)
    except ValueError:
        return None, None, None
    return spec.depth, spec.kind, spec.family


def recipe(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config without the keys that do not change what is learned (seed, logging, placement)."""
    return {k: v for k, v in config.items() if k not in NOT_RECIPE}


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


def label_runs(runs: Sequence[RunData]) -> list[RunData]:
    """Give each run a label unique within ``runs``: the architecture, then its seed, then id."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["architecture"]] = counts.get(r["architecture"], 0) + 1
    labelled: list[RunData] = []
    seen: set[str] = set()
    for r in runs:
        label = r["architecture"]
        if counts[label] > 1 and r.get("seed") is not None:
            label = f"{label} s{r.get('seed')}"
        if label in seen:
            label = f"{label} {r['id'][:6]}"
        seen.add(label)
        labelled.append(RunData(**{**r, "label": label}))
    return labelled


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
    for key in EPOCH_KEYS:
        row[key] = getattr(e, key)  # type: ignore[literal-required]
    return row


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (a diverged loss) replaced by ``None``: valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
