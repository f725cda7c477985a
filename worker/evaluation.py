"""One delivery of an evaluation task: score a run's saved model on a split of its data."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from jobs.records import EvaluationStatus, RecordNotFound, RunStatus, session_scope
from jobs.records.repository import (
    claim_evaluation,
    evaluation_heartbeat,
    finish_evaluation,
    get_evaluation,
    get_run,
)
from jobs.settings import Settings
from jobs.storage import write_bytes
from worker.artifacts import ArtifactStore
from worker.data import load_data
from worker.runtime import Heartbeat, describe_error, jsonable, worker_name

if TYPE_CHECKING:
    from core.data import ImageSet
    from core.evaluation import Predictions

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class _Job:
    evaluation_id: str
    run_id: str
    run_status: RunStatus
    split: str
    dataset: str | None  # None: the run's own data, split as the run split it
    run_config: dict[str, Any]
    attempt: int


def run_evaluation(
    evaluation_id: str, *, settings: Settings, sessions: sessionmaker[Session]
) -> str:
    """Handle one delivery of ``worker.evaluate_run``.

    Claims the evaluation (a conditional UPDATE: a second delivery does nothing), loads the
    run's ``model.keras`` in safe mode, scores it on the split, stores the predictions beside
    the run's files and records every metric. A heartbeat thread keeps the evaluation alive;
    if this worker dies, the sweeper queues the evaluation again (``worker.sweeper``).

    The split of the run's own data is the one training used: ``val`` is the validation set
    the run's config carved out of the training images (``validation``), ``train`` the rest,
    ``test`` the source's test split. With another dataset named on the evaluation, the split
    is that source's own and its classes must be the model's.

    Returns:
        ``succeeded``, ``failed`` or ``skipped`` (nothing to do).
    """
    job = _claim(sessions, evaluation_id)
    if job is None:
        return "skipped"
    heartbeat = Heartbeat(
        lambda: _beat(sessions, evaluation_id, job.attempt),
        interval_s=settings.heartbeat_seconds,
        name=f"heartbeat-{evaluation_id}",
    )
    try:
        with heartbeat:
            metrics, predictions = _evaluate(job, settings)
            uri = ArtifactStore.from_settings(settings).predictions_uri(job.run_id, evaluation_id)
            write_bytes(uri, predictions.to_bytes())
    except Exception as exc:
        log.exception("evaluation %s: failed", evaluation_id)
        with session_scope(sessions) as session:
            finish_evaluation(
                session,
                evaluation_id,
                status=EvaluationStatus.FAILED,
                error=describe_error(exc),
                attempt=job.attempt,
            )
        return "failed"
    with session_scope(sessions) as session:
        finished = finish_evaluation(
            session,
            evaluation_id,
            status=EvaluationStatus.SUCCEEDED,
            metrics=jsonable(metrics),
            predictions_uri=uri,
            predictions_count=len(predictions),
            attempt=job.attempt,
        )
    if not finished:  # reclaimed while this worker stalled: the newer attempt records it
        log.warning("evaluation %s: attempt %d no longer holds it", evaluation_id, job.attempt)
        return "skipped"
    log.info(
        "evaluation %s: run %s on %s: accuracy %s",
        evaluation_id,
        job.run_id,
        job.split,
        metrics.get("accuracy", metrics.get("subset_accuracy")),
    )
    return "succeeded"


def _claim(sessions: sessionmaker[Session], evaluation_id: str) -> _Job | None:
    with session_scope(sessions) as session:
        try:
            attempt = claim_evaluation(session, evaluation_id, worker_host=worker_name())
            if attempt is None:
                log.info("evaluation %s: not queued any more; nothing to do", evaluation_id)
                return None
        except RecordNotFound:
            log.info("evaluation %s: no such evaluation; nothing to do", evaluation_id)
            return None
        evaluation = get_evaluation(session, evaluation_id)
        run = get_run(session, evaluation.run_id)
        return _Job(
            evaluation_id=evaluation_id,
            run_id=run.id,
            run_status=run.status,
            split=evaluation.split,
            dataset=evaluation.dataset,
            run_config=dict(run.config),
            attempt=attempt,
        )


def _beat(sessions: sessionmaker[Session], evaluation_id: str, attempt: int) -> None:
    with session_scope(sessions) as session:
        if not evaluation_heartbeat(session, evaluation_id, attempt=attempt):
            log.warning("evaluation %s: attempt %d no longer holds it", evaluation_id, attempt)


def _evaluate(job: _Job, settings: Settings) -> tuple[dict[str, Any], Predictions]:
    from core.data import make_pipeline
    from core.evaluation import score_dataset
    from core.inference import Predictor
    from core.training import TrainConfig
    from core.training.trainer import prepare_splits

    if job.run_status != RunStatus.SUCCEEDED:
        raise ValueError(f"Run {job.run_id} has no trained model: it is {job.run_status.value}")
    if job.split not in SPLITS:
        raise ValueError(f"Unknown split: {job.split!r}. Expected one of {', '.join(SPLITS)}")
    store = ArtifactStore.from_settings(settings)
    with store.model_file(job.run_id) as path:
        predictor = Predictor.load(path)
    if job.dataset is None:
        config = TrainConfig.model_validate(job.run_config)
        spec = config.data
        dataset = load_data(spec, settings)
        splits = prepare_splits(config, dataset)
        images = {"train": splits.train, "val": splits.val, "test": splits.test}[job.split]
    else:
        spec = job.dataset
        dataset = load_data(spec, settings)
        images = dataset.splits.get(job.split)
    if images is None:
        raise ValueError(
            f"The data {spec!r} has no {job.split!r} split"
            + (" (the run's config holds out no validation set)" if job.split == "val" else "")
        )
    if list(dataset.class_names) != list(predictor.class_names):
        raise ValueError(
            f"The data's classes {dataset.class_names[:10]} do not match the model's "
            f"{predictor.class_names[:10]}"
        )
    batches = make_pipeline(
        images,
        batch_size=EVAL_BATCH_SIZE,
        training=False,
        image_shape=predictor.input_shape,
        augment="none",
    )
    metrics, predictions = score_dataset(
        predictor.model,
        batches,
        class_names=predictor.class_names,
        multi_label=predictor.multi_label,
        ids=image_ids(images, job.split),
    )
    if len(predictions) != len(images):
        # Files that failed to decode were skipped by the pipeline: names no longer line up.
        positions = [f"{job.split}/{i}" for i in range(len(predictions))]
        predictions = replace(predictions, ids=positions)
        metrics["ids"] = f"positional: {len(images) - len(predictions)} images could not be read"
    metrics["split"] = job.split
    metrics["dataset"] = spec
    return metrics, predictions


def image_ids(images: ImageSet, split: str) -> list[str]:
    """A name per image, in the split's order: its file in the dataset, else its position."""
    if images.names is not None:
        return list(images.names)
    return [f"{split}/{i}" for i in range(len(images))]
