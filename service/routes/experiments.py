"""``/v1/experiments``: a grid or a random search of runs, queued together, summarised together.

With ``early_stopping`` (ASHA or median stopping) the cells are trials of an adaptive search:
the rule's settings are checked here against the budget (a 422 names the field), at most
``max_concurrent`` runs are sent and the others recorded ``paused``; the search's decisions
are the records' (:mod:`jobs.records.trials`), made as the workers report.

An experiment is expanded into cells (architecture × hyperparameters × seed), and every cell's
config is resolved by the same function as ``POST /v1/runs`` (:mod:`service.run_configs`),
before anything is recorded. Then the experiment and all its runs are submitted together
(:mod:`service.submission`): one transaction, sent after the commit, and if the broker stops
taking messages part-way, the runs not sent are marked ``failed`` and the answer is 503.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from fastapi import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.early_stopping import Verdict, asha_rungs, check_asha
from core.reports.bundle import api_environment, experiment_bundle
from core.reports.experiments import (
    MAX_CELLS,
    Cell,
    Group,
    aggregate,
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
from core.training.config import apply_overrides, override_at
from jobs.records import RunStatus, trials
from jobs.records import repository as records
from jobs.records.models import Experiment, ExperimentKind, Run, TrialRung
from jobs.reports import load_experiment_runs
from jobs.settings import Settings
from service.deps import QueueDep, ReadKey, SessionDep, SettingsDep, TrainKey, committed
from service.errors import ApiError, Locate, from_pydantic, invalid
from service.owners import QUOTA_ERRORS, check_stored_bytes, hold_run_quota, require_owner
from service.routes import (
    ZIP_CONTENT,
    Limit,
    Offset,
    error_responses,
    keyed_router,
    zip_response,
)
from service.run_configs import ResolvedRun, record_run, resolve_run_config
from service.schemas import (
    CellPublic,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    ExperimentSummary,
    RunCreate,
)
from service.schemas.experiments import RungPublic
from service.submission import RUN, submit

router = keyed_router(prefix="/v1/experiments", tag="experiments")


class _Recorded(NamedTuple):
    experiment: Experiment
    run_ids: list[str]  # the runs to send, in cell order (an adaptive search's first few)


# --- routes ----------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    summary="Queue an experiment: one run per cell of a grid or random search, or an adaptive "
    "search (ASHA, median stopping)",
    responses={**error_responses(503), **QUOTA_ERRORS},
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
    ``queued`` and sent to the workers.

    With ``early_stopping`` (``asha`` or ``median``) the cells are trials of an adaptive
    search: its settings are checked against the budget (``base.epochs``; a bad combination is
    a 422 naming the field), the first ``max_concurrent`` runs are sent and the others wait
    ``paused``; losers are stopped early (``cancelled``, with the rung and the reason) and
    promoted trials resume from their checkpoints."""
    cells = _cells(body)
    resolved = [_cell_config(session, settings, body, i, cell) for i, cell in enumerate(cells)]
    spec = body.model_dump(mode="json")
    if body.early_stopping is not None:
        spec["early_stopping"] = _early_stopping(body, resolved)
    check_stored_bytes(session, settings, key)

    def record() -> _Recorded:
        hold_run_quota(session, settings, key, adding=len(cells))
        experiment = records.create_experiment(
            session,
            name=body.name,
            kind=ExperimentKind.RANDOM if body.random is not None else ExperimentKind.GRID,
            spec=spec,
            api_key_id=key.id,
        )
        run_ids = []
        for cell, run_config in zip(cells, resolved, strict=True):
            run = record_run(
                session, run_config, api_key_id=key.id, max_attempts=settings.max_attempts
            )
            records.attach_to_experiment(session, experiment, run, cell=dict(cell))
            run_ids.append(run.id)
        if body.early_stopping is not None:
            limit = body.early_stopping.max_concurrent
            run_ids = trials.hold_back(session, run_ids, max_concurrent=limit)
        return _Recorded(experiment, run_ids)

    experiment, _ = submit(
        session,
        queue,
        RUN,
        record,
        job_ids=lambda recorded: recorded.run_ids,
        describe=lambda recorded, unsent: (
            f"Experiment {recorded.experiment.id} ({unsent} of {len(recorded.run_ids)} runs)"
        ),
    )
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
        runs = records.list_experiment_runs(session, row.id)
        statuses = [r.status.value for r in runs]
        stopped = trials.stopped_early_ids(session, row.id)
        judged = [_judged(r.status.value, r.id in stopped) for r in runs]
        items.append(
            ExperimentSummary(
                id=row.id,
                name=row.name,
                kind=row.kind,
                status=experiment_status(judged, cancelled=row.cancelled_at is not None),
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
    summary="Cancel the experiment's runs that have not finished (its owner's key or admin)",
    responses=error_responses(404),
)
def cancel_experiment(experiment_id: str, session: SessionDep, key: TrainKey) -> ExperimentPublic:
    """Queued runs are cancelled at once, running ones stop within a few batches; finished
    runs keep their results. Cancelling again changes nothing. Another key's experiment: 403,
    unless this is an admin key."""
    experiment = records.get_experiment(session, experiment_id)
    require_owner(session, key, experiment, f"Experiment {experiment_id}")
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


def _early_stopping(body: ExperimentCreate, resolved: list[ResolvedRun]) -> dict[str, Any]:
    """The rule's block as the spec keeps it (ASHA's rungs resolved), after checking it
    against the budget: 422s name the field."""
    assert body.early_stopping is not None
    rule = body.early_stopping
    where = "body.early_stopping"
    block = rule.model_dump(mode="json")
    asha_only = {"reduction_factor": rule.reduction_factor, "rungs": rule.rungs}
    median_only = {"min_trials": rule.min_trials}
    misplaced = median_only if rule.rule == "asha" else asha_only
    for field, value in misplaced.items():
        if value is not None:
            raise invalid(f"{where}.{field}", f"not a setting of the {rule.rule!r} rule", value)
    varied = body.random.space if body.random is not None else body.grid
    axis = "body.random.space" if body.random is not None else "body.grid"
    if "epochs" in varied:
        raise invalid(
            f"{axis}.epochs",
            "an adaptive search sets each trial's budget: give 'epochs' once, in base",
            varied["epochs"],
        )
    budget = resolved[0].config.epochs
    if rule.metric.startswith("val_") and any(r.config.validation is None for r in resolved):
        raise invalid(
            "body.base.validation",
            f"early stopping by {rule.metric!r} needs a validation split (e.g. 0.1), "
            "or judge by 'accuracy' or 'loss'",
        )
    if rule.rule == "median":
        block["min_trials"] = 3 if rule.min_trials is None else rule.min_trials
        if block["min_trials"] < 1:
            raise invalid(f"{where}.min_trials", "must be at least 1", rule.min_trials)
        if rule.grace_period >= budget:
            raise invalid(
                f"{where}.grace_period",
                f"must be below the budget (epochs = {budget}), or no trial is ever judged",
                rule.grace_period,
            )
        return block
    factor = 3 if rule.reduction_factor is None else rule.reduction_factor
    grace = rule.grace_period
    if rule.rungs and "grace_period" not in rule.model_fields_set:
        grace = rule.rungs[0]  # explicit rungs: the first one is the grace period
    problem = check_asha(
        max_epochs=budget, grace_period=grace, reduction_factor=factor, rungs=rule.rungs
    )
    if problem is not None:
        field, message = problem
        value = {"reduction_factor": factor, "grace_period": grace}.get(field)
        raise invalid(f"{where}.{field}", message, rule.rungs if field == "rungs" else value)
    block.update(reduction_factor=factor, grace_period=grace)
    block["rungs"] = asha_rungs(
        max_epochs=budget, grace_period=grace, reduction_factor=factor, rungs=rule.rungs
    )
    return block


def _cell_config(
    session: Session, settings: Settings, body: ExperimentCreate, index: int, cell: Cell
) -> ResolvedRun:
    """Resolve one cell's config as ``POST /v1/runs`` would; errors name the experiment's field
    (see :func:`_cell_field`) and the cell."""
    request = apply_overrides(body.base, cell["params"])
    request.update(architecture=cell["architecture"], seed=cell["seed"])
    locate = _cell_field(cell, "body.random.space" if body.random is not None else "body.grid")
    try:
        # An experiment sends one message per run: its runs train on one worker each.
        return resolve_run_config(
            session,
            RunCreate.model_validate(request),
            settings=settings,
            locate=locate,
            max_workers=1,
        )
    except ValidationError as exc:
        error = from_pydantic(exc, locate=locate)
    except ApiError as exc:
        error = exc
    described = f"cell {index} ({cell['architecture']}, seed {cell['seed']}"
    described += "".join(f", {k}={v!r}" for k, v in cell["params"].items()) + ")"
    first = error.details[0] if error.details else None
    message = f"{described}: " + (f"{first.field}: {first.message}" if first else error.message)
    raise ApiError(error.status_code, message, code=error.code, details=error.details) from None


def _cell_field(cell: Cell, axis: str) -> Locate:
    """Where a cell's value came from in the experiment: the architecture from
    ``body.architectures``, a varied value from its axis (``body.grid.<path>`` or
    ``body.random.space.<path>``), anything else from ``body.base``."""

    def locate(loc: tuple[str | int, ...]) -> str:
        if loc[:1] == ("architecture",):
            return "body.architectures"
        varied = override_at(loc, cell["params"])
        if varied is not None:
            return f"{axis}.{varied}"
        return ".".join(("body", "base", *(str(part) for part in loc)))

    return locate


def _public(session: Session, experiment: Experiment) -> ExperimentPublic:
    # The same numbers as Table 1: test metrics from the run's test evaluation if it has one,
    # training time from the worker's record or the epochs' seconds.
    runs = {r["id"]: r for r in load_experiment_runs(session, experiment.id)}
    rungs = trials.trial_rungs(session, experiment.id)
    errors = dict(
        session.execute(select(Run.id, Run.error).where(Run.experiment_id == experiment.id)).all()
    )
    cells = [
        _cell_public(
            cell,
            runs.get(cell["run_id"]),
            rungs=rungs.get(cell["run_id"], []),
            error=errors.get(cell["run_id"]),
        )
        for cell in experiment.cells
    ]
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
        status=experiment_status(
            [_judged(c.status.value, c.stopped_early) for c in cells if c.status is not None],
            cancelled=experiment.cancelled_at is not None,
        ),
        counts=_counts(statuses),
        created_at=experiment.created_at,
        cancelled_at=experiment.cancelled_at,
        spec=experiment.spec,
        cells=cells,
        aggregate=[finite(dict(g)) for g in groups],
        owner_key_id=experiment.api_key_id,
    )


def _cell_public(
    cell: dict[str, Any], run: RunData | None, *, rungs: list[TrialRung], error: str | None
) -> CellPublic:
    stopped = next((r for r in rungs if r.decision == Verdict.STOPPED), None)
    public = CellPublic(
        run_id=cell["run_id"],
        architecture=cell["architecture"],
        seed=cell["seed"],
        params=cell.get("params", {}),
        rung=rungs[-1].rung if rungs else None,
        stopped_early=stopped is not None,
        stop_reason=error,
        rungs=[
            RungPublic(
                rung=r.rung,
                epoch=r.epoch,
                value=finite(r.value),
                decision=r.decision,
                reason=r.reason,
            )
            for r in rungs
        ],
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


def _judged(status: str, stopped_early: bool) -> str:
    # A trial its search stopped early is the search doing its work, not a failure.
    return "stopped" if stopped_early and status == "cancelled" else status


def _counts(statuses: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return counts
