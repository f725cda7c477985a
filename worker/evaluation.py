"""One delivery of an evaluation task: score a run's saved model on a split of its data, or
predict every file of an unlabelled folder with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from core.data.types import UNLABELLED_KIND
from jobs.records import Evaluation, EvaluationStatus, RunStatus, session_scope
from jobs.records.evaluations import finish_evaluation
from jobs.records.lifecycle import EVALUATION_JOBS
from jobs.settings import Settings
from jobs.storage import write_bytes
from worker.artifacts import ArtifactStore
from worker.data import list_images, load_data
from worker.lifecycle import JobHeartbeat, claim_job
from worker.runtime import describe_error, jsonable

if TYPE_CHECKING:
    from core.data import ImageSet
    from core.evaluation import Predictions
    from core.inference import Predictor

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

    Claims the evaluation through the one job lifecycle (:func:`worker.lifecycle.claim_job`: a
    second delivery does nothing; an evaluation whose worker died is taken over), loads the
    run's ``model.keras`` in safe mode, scores it on the split, stores the predictions beside
    the run's files and records every metric. The job's heartbeat keeps the evaluation alive;
    if this worker dies, the sweeper queues the evaluation again (``worker.sweeper``). If the
    evaluation is taken from this worker meanwhile (reclaimed while it stalled), scoring stops
    within a batch and nothing is recorded.

    The split of the run's own data is the one training used: ``val`` is the validation set
    the run's config carved out of the training images (``validation``), ``train`` the rest,
    ``test`` the source's test split. With another dataset named on the evaluation, the split
    is that source's own and its classes must be the model's. Unlabelled images (an
    ``images:PATH`` dataset, split ``all``) are predicted file by file instead: no metrics, a
    row per file, an unreadable file's reason in its row (:mod:`core.data.unlabelled`).

    Returns:
        ``succeeded``, ``failed``, ``skipped`` (nothing to do) or ``lost`` (taken from this
        worker mid-way).
    """
    claimed = claim_job(
        sessions,
        EVALUATION_JOBS,
        evaluation_id,
        stale_after_s=settings.stale_after_seconds,
        read=_job_of,
    )
    if claimed is None:
        return "skipped"
    job = replace(claimed[0], attempt=claimed[1])
    heartbeat = JobHeartbeat(
        sessions,
        EVALUATION_JOBS,
        evaluation_id,
        attempt=job.attempt,
        interval_s=settings.heartbeat_seconds,
    )
    try:
        with heartbeat:
            outcome = _evaluate(job, settings, heartbeat)
            predictions = outcome.predictions
            heartbeat.check()  # taken away while scoring the last batch: keep nothing
            uri = ArtifactStore.from_settings(settings).predictions_uri(job.run_id, evaluation_id)
            write_bytes(uri, predictions.to_bytes())
    except Exception as exc:
        if heartbeat.lost.is_set():
            return "lost"  # whatever broke, the attempt that holds it now records the outcome
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
            metrics=None if outcome.metrics is None else jsonable(outcome.metrics),
            predictions_uri=uri,
            predictions_count=len(predictions),
            seconds=outcome.seconds,
            images_per_second=outcome.images_per_second,
            attempt=job.attempt,
        )
    if not finished:  # reclaimed after the last beat: the newer attempt records it
        log.warning("evaluation %s: attempt %d no longer holds it", evaluation_id, job.attempt)
        return "lost"
    if outcome.metrics is None:
        log.info(
            "evaluation %s: run %s predicted %d unlabelled images (%d unreadable)",
            evaluation_id,
            job.run_id,
            len(predictions),
            predictions.unreadable,
        )
    else:
        log.info(
            "evaluation %s: run %s on %s: accuracy %s",
            evaluation_id,
            job.run_id,
            job.split,
            outcome.metrics.get("accuracy", outcome.metrics.get("subset_accuracy")),
        )
    return "succeeded"


def _job_of(evaluation: Evaluation) -> _Job:
    """What the evaluation needs from its records, read in the claim's transaction."""
    run = evaluation.run
    return _Job(
        evaluation_id=evaluation.id,
        run_id=run.id,
        run_status=run.status,
        split=evaluation.split,
        dataset=evaluation.dataset,
        run_config=dict(run.config),
        attempt=0,  # filled in with the attempt the claim returns
    )


@dataclass(frozen=True)
class _Outcome:
    """What an evaluation keeps: its metrics (None for unlabelled images: nothing to score),
    the predictions, and how long the pass took."""

    metrics: dict[str, Any] | None
    predictions: Predictions
    seconds: float | None
    images_per_second: float | None


def _evaluate(job: _Job, settings: Settings, heartbeat: JobHeartbeat[Evaluation]) -> _Outcome:
    from core.inference import Predictor

    if job.run_status != RunStatus.SUCCEEDED:
        raise ValueError(f"Run {job.run_id} has no trained model: it is {job.run_status.value}")
    unlabelled = job.dataset is not None and job.dataset.startswith(f"{UNLABELLED_KIND}:")
    if not unlabelled and job.split not in SPLITS:
        raise ValueError(f"Unknown split: {job.split!r}. Expected one of {', '.join(SPLITS)}")
    store = ArtifactStore.from_settings(settings)
    with store.model_file(job.run_id) as path:
        predictor = Predictor.load(path)
    if unlabelled:
        assert job.dataset is not None
        return _predict_unlabelled(job.dataset, predictor, settings, heartbeat)
    metrics, predictions = _score(job, predictor, settings, heartbeat)
    return _Outcome(metrics, predictions, metrics.get("seconds"), metrics.get("images_per_second"))


def _predict_unlabelled(
    spec: str, predictor: Predictor, settings: Settings, heartbeat: JobHeartbeat[Evaluation]
) -> _Outcome:
    """Every file of an unlabelled folder, a row each; unreadable files reported in theirs."""
    from core.data.unlabelled import decode_chunks
    from core.inference.unlabelled import predict_unlabelled

    listing = list_images(spec, settings)
    chunks = decode_chunks(listing, channels=predictor.channels, size=EVAL_BATCH_SIZE)
    # Stops within a chunk once the job is taken away.
    predictions, seconds = predict_unlabelled(predictor, heartbeat.until_lost(chunks))
    rate = len(predictions) / seconds if seconds > 0 else None
    return _Outcome(None, predictions, seconds, rate)


def _score(
    job: _Job, predictor: Predictor, settings: Settings, heartbeat: JobHeartbeat[Evaluation]
) -> tuple[dict[str, Any], Predictions]:
    """A labelled split scored: its metrics and the predictions they came from."""
    from core.data import make_pipeline
    from core.evaluation import score_dataset
    from core.training import TrainConfig
    from core.training.trainer import prepare_splits

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
        heartbeat.until_lost(batches),  # stops within a batch once the job is taken away
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
