"""From a run request to its training config and its record: the service's end of the one
config path.

A request names its data by a dataset reference or a data source (see
:mod:`service.schemas.runs`). Here the reference becomes the registered dataset's source, a
source is checked to carry no path on the server, a weights file to start from
(``init_from``) is checked under the data root (:mod:`service.init_from`), and the architecture,
the source, the preset and the request's overrides (dotted paths) go to
:func:`core.training.config.resolve_config`, the only validator of a config. ``POST /v1/runs``
and every experiment cell come through :func:`resolve_run_config`; errors are 422s whose fields
``locate`` places in the request.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.data.types import UNLABELLED_KIND
from core.training.config import TrainConfig, resolve_config
from core.training.distribution_plan import plan_distribution
from jobs.records import Run
from jobs.records import repository as records
from jobs.settings import Settings
from service.data import check_data_source, registered_dataset, source_of
from service.errors import Locate, from_pydantic, invalid
from service.init_from import init_from_overrides
from service.schemas.runs import RunCreate


class ResolvedRun(NamedTuple):
    config: TrainConfig
    dataset_id: str | None = None  # the registered dataset it trains on, if named by reference
    workers: int = 1
    # Above one worker: the batch and rate arithmetic it will train by (DistributionPlan).
    distribution: dict[str, Any] | None = None


def in_body(loc: tuple[str | int, ...]) -> str:
    """``("schedule", "base_lr")`` → ``body.schedule.base_lr``: where ``POST /v1/runs`` has it."""
    return ".".join(("body", *(str(part) for part in loc)))


def resolve_run_config(
    session: Session,
    request: RunCreate,
    *,
    settings: Settings,
    locate: Locate = in_body,
    max_workers: int | None = None,
) -> ResolvedRun:
    """The run's full config, and the registered dataset it trains on (if any).

    Args:
        session: To look up a dataset reference.
        request: The validated request.
        settings: For the data root ``init_from`` names a file under.
        locate: Maps a place in the request (``("dataset",)``, ``("optimizer", "momentum")``)
            to the field an error names.
        max_workers: The most ``workers`` allowed; default ``RESNET_MAX_WORKERS_PER_RUN``.

    Raises:
        ApiError: 422 naming the offending field (``body.architecture``, ``body.preset``,
            ``body.dataset``, ``body.data``, ``body.batch_size``, ``body.optimizer.momentum``,
            ``body.init_from``…).
    """
    if (request.dataset is None) == (request.data is None):
        raise invalid(
            locate(("dataset",)),
            "name the data with either 'dataset' (a registered dataset's name or id) or 'data' "
            "(a source without a path), not both",
            request.dataset,
        )
    if request.dataset is not None:
        dataset = registered_dataset(session, request.dataset, field=locate(("dataset",)))
        if dataset.kind == UNLABELLED_KIND:
            raise invalid(
                locate(("dataset",)),
                f"dataset {dataset.name!r} holds unlabelled images (kind {UNLABELLED_KIND!r}): "
                "a model cannot be trained on it; predict it with "
                "POST /v1/models/{name}/batch-predictions",
                request.dataset,
            )
        source, dataset_id = source_of(dataset), dataset.id
    else:
        assert request.data is not None
        source, dataset_id = check_data_source(request.data, field=locate(("data",))), None
    overrides = request.overrides()
    if request.init_from is not None:
        overrides.update(
            init_from_overrides(
                request.init_from,
                architecture=request.architecture,
                sent=overrides,
                settings=settings,
                locate=locate,
            )
        )
    try:
        config = resolve_config(
            request.architecture, source, preset=request.preset, overrides=overrides
        )
    except ValidationError as exc:
        raise from_pydantic(exc, locate=locate) from None
    most = settings.max_workers_per_run if max_workers is None else max_workers
    distribution = plan_workers(config, request.workers, most=most, field=locate(("workers",)))
    return ResolvedRun(config, dataset_id, request.workers, distribution)


def plan_workers(
    config: TrainConfig, workers: int, *, most: int, field: str
) -> dict[str, Any] | None:
    """The distribution plan of ``config`` over ``workers`` (``None`` for one worker).

    Raises:
        ApiError: 422 on ``field``: more workers than ``most``, or a batch that does not split
            evenly over them.
    """
    if workers > most:
        raise invalid(
            field,
            f"at most {most} worker(s) per run here (RESNET_MAX_WORKERS_PER_RUN); got {workers}",
            workers,
        )
    if workers == 1:
        return None
    try:
        _, plan = plan_distribution(config, workers=[], num_replicas=workers)
    except ValueError as exc:
        raise invalid(field, str(exc), workers) from None
    return plan.to_dict()


def record_run(
    session: Session, resolved: ResolvedRun, *, api_key_id: str | None, max_attempts: int
) -> Run:
    """Record a run of a resolved config as ``queued`` (the caller commits, then sends it)."""
    config = resolved.config
    return records.create_run(
        session,
        architecture=config.architecture,
        dataset=config.data,
        config=config.model_dump(mode="json"),
        api_key_id=api_key_id,
        max_attempts=max_attempts,
        dataset_id=resolved.dataset_id,
        workers=resolved.workers,
        distribution=resolved.distribution,
    )
