"""``/v1/experiments``: a grid or a random search of runs, queued together, summarised together.

An experiment is expanded into cells (architecture × hyperparameters × seed), and every cell's
config is validated exactly as ``POST /v1/runs`` validates one, before anything is recorded.
Then the experiment and all its runs are committed in one transaction, and only afterwards sent
to the workers. If the broker stops taking messages part-way, the runs not sent are marked
``failed`` ("could not enqueue") and the request answers 503: nothing sits queued with no
message behind it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from core.reports.bundle import api_environment, experiment_bundle
from core.reports.experiments import (
    MAX_CELLS,
    Cell,
    Group,
    aggregate,
    apply_params,
    check_param_path,
    check_range,
    expand_grid,
    experiment_status,
    grid_size,
    sample_random,
    with_plain_twins,
)
from core.reports.runs import RunData, finite
from core.reports.tables import headline
from core.training.config import TrainConfig
from jobs.records import RunStatus
from jobs.records import repository as records
from jobs.records.models import Experiment, ExperimentKind
from jobs.reports import load_experiment_runs
from service.deps import QueueDep, ReadKey, SessionDep, SettingsDep, TrainKey, committed
from service.errors import ApiError, ErrorDetail, from_pydantic, invalid
from service.records import fail_unqueued_run
from service.routes import AUTH_ERRORS, Limit, Offset, error_responses
from service.routes.reports import ZIP_CONTENT, zip_response
from service.routes.runs import queue_unavailable, validated_config
from service.schemas import RunCreate

router = APIRouter(
    prefix="/v1/experiments",
    tags=["experiments"],
    responses=error_responses(*AUTH_ERRORS, 422),
)


# --- schemas ---------------------------------------------------------------------------------


class RandomSearch(BaseModel):
    """``trials`` draws from ``space``; the same ``seed`` gives the same draws."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(..., ge=1, le=MAX_CELLS)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the draws, not the runs")
    space: dict[str, dict[str, Any]] = Field(
        ...,
        min_length=1,
        description="Hyperparameter path → {low, high[, log][, integer]} or {choices: [...]}",
        examples=[
            {
                "schedule.base_lr": {"low": 0.01, "high": 0.3, "log": True},
                "optimizer.weight_decay": {"choices": [1e-4, 5e-4]},
            }
        ],
    )


class ExperimentCreate(BaseModel):
    """Architectures × seeds × (a grid of hyperparameters | random-search trials).

    ``base`` holds the fields of ``POST /v1/runs`` every cell shares (``dataset`` or ``data``,
    ``preset``, ``epochs``, ``batch_size``, …). Hyperparameters are named by path: a config
    field (``epochs``, ``label_smoothing``) or ``section.field`` (``schedule.base_lr``,
    ``optimizer.weight_decay``). At most 200 cells.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128)
    architectures: list[str] = Field(
        ..., min_length=1, max_length=MAX_CELLS, examples=[["resnet20", "resnet32", "resnet44"]]
    )
    plain_twins: bool = Field(
        False, description="Add each ResNet's plain twin (resnet20 → plain20), as in Figure 6"
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_CELLS)
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="POST /v1/runs fields every cell shares (not architecture or seed)",
        examples=[{"data": "cifar10", "preset": "cifar-paper"}],
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Hyperparameter path → the values to try; every combination is a cell",
        examples=[{"schedule.base_lr": [0.1, 0.05], "optimizer.weight_decay": [1e-4, 5e-4]}],
    )
    random: RandomSearch | None = Field(None, description="Instead of a grid")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 0 <= s <= 2**31 - 1]
        if bad:
            raise ValueError(f"seeds must lie in [0, 2**31 - 1]; got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


class CellPublic(BaseModel):
    run_id: str
    architecture: str
    seed: int
    params: dict[str, Any]
    status: RunStatus | None = Field(None, description="null: the run was deleted")
    epochs_completed: int | None = None
    epochs_planned: int | None = None
    accuracy: float | None = Field(None, description="Test accuracy, %")
    error: float | None = Field(None, description="Test error, %")
    f1: float | None = Field(None, description="Macro F1, %")
    training_time: float | None = Field(None, description="Seconds")


class ExperimentPublic(BaseModel):
    id: str
    name: str
    kind: ExperimentKind
    status: str = Field(..., description="queued, running, succeeded, failed or cancelled")
    counts: dict[str, int] = Field(..., description="Runs per status")
    created_at: datetime
    cancelled_at: datetime | None
    spec: dict[str, Any]
    cells: list[CellPublic]
    aggregate: list[dict[str, Any]] = Field(
        ..., description="Per architecture and hyperparameters: mean and _std over seeds"
    )


class ExperimentSummary(BaseModel):
    id: str
    name: str
    kind: ExperimentKind
    status: str
    counts: dict[str, int]
    runs: int
    created_at: datetime
    cancelled_at: datetime | None


class ExperimentsPublic(BaseModel):
    items: list[ExperimentSummary]
    total: int
    limit: int
    offset: int


# --- routes ----------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    summary="Queue an experiment: one run per cell of a grid or random search",
    responses=error_responses(503),
)
def create_experiment(
    body: ExperimentCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    key: TrainKey,
) -> ExperimentPublic:
    """Every cell's config is validated as ``POST /v1/runs`` would (a bad value is a 422 naming
    the field and the cell); more than 200 cells is a 422. Then the runs are recorded as
    ``queued`` and sent to the workers."""
    cells = _cells(body)
    configs = [_cell_config(session, body, i, cell) for i, cell in enumerate(cells)]
    kind = ExperimentKind.RANDOM if body.random is not None else ExperimentKind.GRID
    with committed(session):
        experiment = records.create_experiment(
            session,
            name=body.name,
            kind=kind,
            spec=body.model_dump(mode="json"),
            api_key_id=key.id,
        )
        run_ids = []
        for cell, (config, dataset_id) in zip(cells, configs, strict=True):
            run = records.create_run(
                session,
                architecture=config.architecture,
                dataset=config.data,
                config=config.model_dump(mode="json"),
                api_key_id=key.id,
                max_attempts=settings.max_attempts,
                dataset_id=dataset_id,
            )
            records.attach_to_experiment(session, experiment, run, cell=dict(cell))
            run_ids.append(run.id)
    for i, run_id in enumerate(run_ids):
        try:
            queue.enqueue_run(run_id)
        except Exception as exc:  # EnqueueError; anything else also means "not queued"
            with committed(session):
                for unsent in run_ids[i:]:
                    fail_unqueued_run(session, unsent, f"could not enqueue: {exc}")
            raise queue_unavailable(
                f"Experiment {experiment.id} ({len(run_ids) - i} of {len(run_ids)} runs)", exc
            ) from None
    response.headers["Location"] = f"{router.prefix}/{experiment.id}"
    return _public(session, experiment)


@router.get("", summary="List experiments, newest first")
def list_experiments(
    session: SessionDep,
    key: ReadKey,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ExperimentsPublic:
    rows, total = records.list_experiments(session, limit=limit, offset=offset)
    items = []
    for row in rows:
        statuses = [r.status.value for r in records.list_experiment_runs(session, row.id)]
        items.append(
            ExperimentSummary(
                id=row.id,
                name=row.name,
                kind=row.kind,
                status=experiment_status(statuses, cancelled=row.cancelled_at is not None),
                counts=_counts(statuses),
                runs=len(row.cells),
                created_at=row.created_at,
                cancelled_at=row.cancelled_at,
            )
        )
    return ExperimentsPublic(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{experiment_id}",
    summary="An experiment: each cell's run and status, and mean ± std over seeds",
    responses=error_responses(404),
)
def get_experiment(experiment_id: str, session: SessionDep, key: ReadKey) -> ExperimentPublic:
    return _public(session, records.get_experiment(session, experiment_id))


@router.post(
    "/{experiment_id}/cancel",
    status_code=202,
    summary="Cancel the experiment's runs that have not finished",
    responses=error_responses(404),
)
def cancel_experiment(experiment_id: str, session: SessionDep, key: TrainKey) -> ExperimentPublic:
    """Queued runs are cancelled at once, running ones stop within a few batches; finished
    runs keep their results. Cancelling again changes nothing."""
    with committed(session):
        experiment, _ = records.cancel_experiment(session, experiment_id)
    return _public(session, experiment)


@router.get(
    "/{experiment_id}/bundle",
    summary="The experiment's reproducibility bundle (zip): spec, Table 1, figures, each run",
    responses={**ZIP_CONTENT, **error_responses(404)},
)
def get_experiment_bundle(experiment_id: str, session: SessionDep, key: ReadKey) -> Response:
    experiment = records.get_experiment(session, experiment_id)
    public = _public(session, experiment).model_dump(mode="json")
    runs = load_experiment_runs(session, experiment_id)
    data = experiment_bundle(public, runs, environment=api_environment())
    return zip_response(data, f"experiment-{experiment_id}.zip")


# --- helpers ---------------------------------------------------------------------------------


def _cells(body: ExperimentCreate) -> list[Cell]:
    """The experiment's cells, after checking its shape and size (422s name the field)."""
    if body.random is not None and body.grid:
        raise invalid("body.random", "give either 'grid' or 'random', not both")
    for field in ("architecture", "seed"):
        if field in body.base:
            raise invalid(
                f"body.base.{field}", f"set by the experiment's '{field}s' list", body.base[field]
            )
    axes = body.random.space if body.random is not None else body.grid
    where = "body.random.space" if body.random is not None else "body.grid"
    for path, values in axes.items():
        problem = check_param_path(path)
        if problem is not None:
            raise invalid(f"{where}.{path}", problem, path)
        if body.random is not None:
            assert isinstance(values, dict)
            problem = check_range(values)
        elif not values:
            problem = "list at least one value"
        if problem is not None:
            raise invalid(f"{where}.{path}", problem, values)
    architectures = [a.strip().lower() for a in body.architectures]
    if body.plain_twins:
        architectures = with_plain_twins(architectures)
    if len(set(architectures)) != len(architectures):
        raise invalid("body.architectures", "architectures must be distinct", body.architectures)
    if body.random is not None:
        size = len(architectures) * len(body.seeds) * body.random.trials
        shape = f"{len(architectures)} architectures × {body.random.trials} trials"
    else:
        size = grid_size(architectures, body.seeds, body.grid)
        combos = math.prod(len(v) for v in body.grid.values())
        shape = f"{len(architectures)} architectures × {combos} grid points"
    if size > MAX_CELLS:
        field = "body.random.trials" if body.random is not None else "body.grid"
        if size // max(1, len(body.seeds)) <= MAX_CELLS:
            field = "body.seeds"
        raise invalid(
            field,
            f"{size} cells ({shape} × {len(body.seeds)} seeds) exceed the limit of {MAX_CELLS}",
            size,
        )
    if body.random is not None:
        return sample_random(
            architectures,
            body.seeds,
            body.random.space,  # type: ignore[arg-type]  # checked by check_range
            trials=body.random.trials,
            seed=body.random.seed,
        )
    return expand_grid(architectures, body.seeds, body.grid)


def _cell_config(
    session: Session, body: ExperimentCreate, index: int, cell: Cell
) -> tuple[TrainConfig, str | None]:
    """Validate one cell as ``POST /v1/runs`` would; errors name the experiment's field."""
    values = apply_params(body.base, cell["params"])
    values.update(architecture=cell["architecture"], seed=cell["seed"])
    described = f"cell {index} ({cell['architecture']}, seed {cell['seed']}"
    described += "".join(f", {k}={v!r}" for k, v in cell["params"].items()) + ")"
    axis = "body.random.space" if body.random is not None else "body.grid"
    try:
        run_body = RunCreate.model_validate(values)
    except ValidationError as exc:
        raise _in_cell(from_pydantic(exc, prefix="body"), described, cell, axis) from None
    try:
        return validated_config(session, run_body)
    except ApiError as exc:
        raise _in_cell(exc, described, cell, axis) from None


def _in_cell(error: ApiError, described: str, cell: Cell, axis: str) -> ApiError:
    """Point a run-validation error at the experiment's field: ``body.architectures``, the
    cell's axis (``body.grid.<path>`` or ``body.random.space.<path>``), or ``body.base.<x>``."""
    details = []
    for d in error.details:
        rest = (d.field or "body").removeprefix("body").lstrip(".")
        parts = rest.split(".") if rest else []
        varied = next(
            (p for p in (".".join(parts[:2]), parts[0] if parts else "") if p in cell["params"]),
            None,
        )
        if parts[:1] == ["architecture"]:
            field = "body.architectures"
        elif varied is not None:
            field = f"{axis}.{varied}"
        else:
            field = f"body.base.{rest}" if rest else "body.base"
        details.append(ErrorDetail(field=field, message=d.message, received=d.received))
    first = details[0] if details else None
    message = f"{described}: " + (f"{first.field}: {first.message}" if first else error.message)
    return ApiError(error.status_code, message, code=error.code, details=details)


def _public(session: Session, experiment: Experiment) -> ExperimentPublic:
    # The same numbers as Table 1: test metrics from the run's test evaluation if it has one,
    # training time from the worker's record or the epochs' seconds.
    runs = {r["id"]: r for r in load_experiment_runs(session, experiment.id)}
    cells = [_cell_public(cell, runs.get(cell["run_id"])) for cell in experiment.cells]
    statuses = [c.status.value for c in cells if c.status is not None]
    groups: list[Group] = aggregate(
        {
            "architecture": c.architecture,
            "params": c.params,
            "run_id": c.run_id,
            "status": c.status.value if c.status else None,
            "metrics": runs[c.run_id].get("metrics") if c.run_id in runs else None,
            "train_seconds": c.training_time,
        }
        for c in cells
    )
    return ExperimentPublic(
        id=experiment.id,
        name=experiment.name,
        kind=experiment.kind,
        status=experiment_status(statuses, cancelled=experiment.cancelled_at is not None),
        counts=_counts(statuses),
        created_at=experiment.created_at,
        cancelled_at=experiment.cancelled_at,
        spec=experiment.spec,
        cells=cells,
        aggregate=[finite(dict(g)) for g in groups],
    )


def _cell_public(cell: dict[str, Any], run: RunData | None) -> CellPublic:
    public = CellPublic(
        run_id=cell["run_id"],
        architecture=cell["architecture"],
        seed=cell["seed"],
        params=cell.get("params", {}),
    )
    if run is None:
        return public
    numbers = headline(run.get("metrics") or {})
    epochs = run.get("epochs") or []
    public.status = RunStatus(run["status"])
    public.epochs_completed = max((e["epoch"] for e in epochs), default=0)
    public.epochs_planned = run.get("epochs_planned")
    public.accuracy = numbers["accuracy"]
    public.error = numbers["error"]
    public.f1 = numbers["f1"]
    public.training_time = run.get("train_seconds")
    return public


def _counts(statuses: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return counts
