"""Reports, figures, live progress and reproducibility bundles, made from the run records.

- ``GET /v1/reports/table1`` and ``/v1/reports/table3``: the study's tables for a set of runs
  (``?runs=id,id``) or an experiment (``?experiment=id``) as JSON, CSV or Markdown;
- ``GET /v1/reports/references``: the numbers the tables compare with, from both sources — He et
  al. 2016 (and the COCO baseline) and the seed study's own results, flagged where inconsistent;
- ``GET /v1/figures/{kind}.{png|svg}``: the study's figures for the same selections;
- ``GET /v1/runs/{id}/events``: server-sent events while a run trains (progress, ETA, each
  finished epoch, "behind the curve"), ending when the run does; ``/v1/runs/{id}/live`` is the
  same state as one JSON document, for polling;
- ``GET /v1/runs/{id}/bundle``: config, environment, history, metrics and figures in one zip.

Everything is computed by :mod:`core.reports` from plain data; matplotlib is imported when the
first figure is drawn, and nothing here imports TensorFlow.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints
from sqlalchemy.orm import Session, sessionmaker

from core.reports.bundle import api_environment, run_bundle
from core.reports.figures import FIGURES, MEDIA_TYPES, FigureDataError, figure
from core.reports.progress import behind_the_curve, snapshot, twins_of
from core.reports.references import references_document
from core.reports.runs import RunData, finite
from core.reports.tables import Table, large_dataset_table, table1
from jobs.records import RecordNotFound, RunStatus
from jobs.records import repository as records
from jobs.reports import load_experiment_runs, load_runs, run_data
from service.deps import ReadKey, SessionDep
from service.errors import ApiError, invalid
from service.routes import ZIP_CONTENT, error_responses, keyed_router, zip_response

router = keyed_router(tag="reports")

MAX_RUNS = 200  # runs in one report or figure
MAX_TWINS = 5  # finished twins a live run is compared with
STREAM_RETRY_MS = 3000  # how soon an EventSource reconnects after the stream ends

FigureKind = enum.StrEnum("FigureKind", {name: name for name in FIGURES})  # type: ignore[misc]
TableFormat = Literal["json", "csv", "md"]

# Record ids as the schema states them, so that a well-formed but unknown id is a 404 and a
# malformed one a 422 (schemathesis' positive-data check holds the API to its schema).
_RUN_IDS = r"^\s*[0-9a-f]{32}\s*(,\s*[0-9a-f]{32}\s*)*$"
_RunsQuery = Annotated[
    list[Annotated[str, StringConstraints(pattern=_RUN_IDS)]] | None,
    Query(
        description="Run ids, comma-separated or repeated (at most 200). Give this or "
        "`experiment`.",
        examples=["3f2a…,9b1c…"],
    ),
]
_ExperimentQuery = Annotated[
    str | None,
    Query(
        description="An experiment's id: its runs. Give this or `runs`.",
        pattern=r"^[0-9a-f]{32}$",
    ),
]
_FormatQuery = Annotated[TableFormat, Query(description="json, csv or md (Markdown)")]

_TABLE_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The table: JSON, or CSV/Markdown text as `format` asks",
        "content": {"text/csv": {}, "text/markdown": {}},
    },
    **error_responses(404),
}


# --- tables ----------------------------------------------------------------------------------


@router.get(
    "/v1/reports/table1",
    summary="Table 1: accuracy, precision, recall, F1, error, the paper's error, training time",
    responses=_TABLE_CONTENT,
)
def report_table1(
    session: SessionDep,
    key: ReadKey,
    runs: _RunsQuery = None,
    experiment: _ExperimentQuery = None,
    format: _FormatQuery = "json",
    aggregate: Annotated[
        bool, Query(description="One row per architecture and recipe: mean ± std over seeds")
    ] = False,
) -> Response:
    """The seed study's Table 1 for the selected runs, one row per run (or per architecture and
    recipe with ``aggregate=true``). The paper's error is He et al. 2016's CIFAR-10 test error
    (Table 6; ResNet-110: best 6.43, mean 6.61 ± 0.16) or ImageNet top-1 10-crop error."""
    selected = select_runs(session, runs, experiment)
    return table_response(table1(selected, aggregate=aggregate), format, "table1")


@router.get(
    "/v1/reports/table3",
    summary="Table 3 (large datasets): accuracy, precision, recall, F1, training time",
    responses=_TABLE_CONTENT,
)
def report_table3(
    session: SessionDep,
    key: ReadKey,
    runs: _RunsQuery = None,
    experiment: _ExperimentQuery = None,
    format: _FormatQuery = "json",
) -> Response:
    """For ImageNet- and COCO-sized runs, beside the published reference: the paper's ImageNet
    10-crop error, or for COCO the ML-GCN ResNet-101 baseline (77.3 mAP at 448 px) — the
    paper's own COCO result is object detection, not a classification target."""
    selected = select_runs(session, runs, experiment)
    return table_response(large_dataset_table(selected), format, "table3")


@router.get("/v1/reports/references", summary="The published numbers reports compare with")
def references(key: ReadKey) -> dict[str, Any]:
    """``items``: He et al. 2016's numbers and the COCO baseline, each with its source;
    ``sources``: every source and its role; ``study``: the seed study's Tables 1–3 as it printed
    them (and as numbers), its hardware, and each row's ``flags`` — where it contradicts itself
    (accuracy + error ≠ 1, its tables disagree) or the original paper."""
    return references_document()


# --- figures ---------------------------------------------------------------------------------


@router.get(
    "/v1/figures/{kind}.{fmt}",
    summary="A figure of the selected runs as PNG or SVG",
    responses={
        200: {"content": {"image/png": {}, "image/svg+xml": {}}, "description": "The image"},
        **error_responses(404),
    },
)
def get_figure(
    kind: FigureKind,
    fmt: Literal["png", "svg"],
    session: SessionDep,
    key: ReadKey,
    runs: _RunsQuery = None,
    experiment: _ExperimentQuery = None,
) -> Response:
    """``training_time_vs_depth`` (the seed's Figure 1), ``error_vs_depth`` (beside the
    paper's), ``curves`` (train/validation per run), ``plain_vs_residual`` (the paper's
    Figure 6), ``confusion`` (test confusion matrices), ``throughput`` (images/s per
    architecture). A selection without the data a figure needs is a 422 saying what is missing.
    """
    selected = select_runs(session, runs, experiment)
    try:
        data = figure(str(kind), selected, fmt=fmt)
    except FigureDataError as exc:
        field = "query.experiment" if experiment is not None else "query.runs"
        raise invalid(field, f"nothing to draw for {kind}: {exc}") from None
    return Response(data, media_type=MEDIA_TYPES[fmt], headers={"Cache-Control": "no-store"})


# --- live progress ---------------------------------------------------------------------------


@router.get(
    "/v1/runs/{run_id}/live",
    tags=["runs"],
    summary="A run's live state: progress, ETA, its epochs, and whether it is behind the curve",
    responses=error_responses(404),
)
def run_live(run_id: str, request: Request, key: ReadKey) -> dict[str, Any]:
    """The state ``/events`` streams, as one document (for clients that poll)."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    twins = _twins(sessions, run_id)
    state = _live_state(sessions, run_id, twins)
    if state is None:
        raise RecordNotFound("Run", run_id)
    return finite(state)


@router.get(
    "/v1/runs/{run_id}/events",
    tags=["runs"],
    summary="Server-sent events while a run trains: progress, ETA, epochs, behind the curve",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "An event stream"},
        **error_responses(404),
    },
)
async def run_events(
    run_id: str,
    request: Request,
    key: ReadKey,
    interval: Annotated[float, Query(ge=0.1, le=10.0, description="Seconds between polls")] = 1.0,
    max_seconds: Annotated[
        float, Query(ge=1.0, le=86_400.0, description="End the stream after this long")
    ] = 3600.0,
) -> StreamingResponse:
    """The database is polled every ``interval`` seconds; an event is sent when something
    changed:

    - ``progress``: status, fraction of the run done, ETA, images/s, the latest epoch and
      ``behind`` (compared with finished twins: same architecture, data and recipe);
    - ``epoch``: one finished epoch's row (``id:`` is the epoch number; reconnecting with
      ``Last-Event-ID`` resumes after it);
    - ``end``: the run reached a terminal status (or was deleted); the stream closes.

    An ``EventSource`` cannot send an ``Authorization`` header: read it with ``fetch`` (as the
    dashboard does), or poll ``/live``.
    """
    sessions: sessionmaker[Session] = request.app.state.sessions
    twins = await run_in_threadpool(_twins, sessions, run_id)
    first = await run_in_threadpool(_live_state, sessions, run_id, twins)
    if first is None:
        raise RecordNotFound("Run", run_id)
    try:
        sent_epochs = max(0, int(request.headers.get("last-event-id", "0")))
    except ValueError:
        sent_epochs = 0
    return StreamingResponse(
        _stream(request, sessions, run_id, twins, first, sent_epochs, interval, max_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request,
    sessions: sessionmaker[Session],
    run_id: str,
    twins: list[RunData],
    state: dict[str, Any] | None,
    sent_epochs: int,
    interval: float,
    max_seconds: float,
) -> AsyncIterator[str]:
    yield f"retry: {STREAM_RETRY_MS}\n\n"
    deadline = time.monotonic() + max_seconds
    last_progress: str | None = None
    while True:
        if state is None:
            yield _event("end", {"run_id": run_id, "status": None, "reason": "deleted"})
            return
        for row in state["epochs"]:
            if row["epoch"] > sent_epochs:
                yield _event("epoch", {"run_id": run_id, **row}, event_id=str(row["epoch"]))
                sent_epochs = row["epoch"]
        progress = {k: v for k, v in state.items() if k != "epochs"}
        encoded = json.dumps(progress, sort_keys=True, default=str)
        if encoded != last_progress:
            yield _event("progress", progress)
            last_progress = encoded
        if RunStatus(state["status"]).terminal:
            yield _event("end", {"run_id": run_id, "status": state["status"]})
            return
        if time.monotonic() >= deadline:
            return  # the client reconnects (retry:) and resumes after its last epoch
        await asyncio.sleep(interval)
        if await request.is_disconnected():
            return
        state = await run_in_threadpool(_live_state, sessions, run_id, twins)


def _event(name: str, data: dict[str, Any], *, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(finite(data), default=str)}\n\n"


def _twins(sessions: sessionmaker[Session], run_id: str) -> list[RunData]:
    """Finished runs that predict this run's curve (see :func:`core.reports.progress.twins_of`)."""
    with sessions() as session:
        try:
            run = records.get_run(session, run_id)
        except RecordNotFound:
            return []
        candidates = records.finished_runs_like(
            session, architecture=run.architecture, dataset=run.dataset, exclude=run.id
        )
        mine = run_data(run)
        matching = twins_of(mine, [run_data(c) for c in candidates])[:MAX_TWINS]
        if not matching:
            return []
        loaded, _ = load_runs(session, [t["id"] for t in matching])
        return loaded


def _live_state(
    sessions: sessionmaker[Session], run_id: str, twins: list[RunData]
) -> dict[str, Any] | None:
    with sessions() as session:
        try:
            run = records.get_run(session, run_id)
        except RecordNotFound:
            return None
        data = run_data(run, records.list_epochs(session, run_id))
    epochs = data.get("epochs") or []
    verdict = behind_the_curve(
        epochs, [t.get("epochs") or [] for t in twins], twin_ids=[t["id"] for t in twins]
    )
    return {
        "run_id": run_id,
        "architecture": data["architecture"],
        **snapshot(data, epochs),
        "error": run.error,
        "behind": verdict,
        "epochs": [dict(e) for e in epochs],
    }


# --- bundles ---------------------------------------------------------------------------------


@router.get(
    "/v1/runs/{run_id}/bundle",
    tags=["runs"],
    summary="A run's reproducibility bundle (zip): config, environment, history, metrics, figures",
    responses={**ZIP_CONTENT, **error_responses(404)},
)
def get_run_bundle(run_id: str, session: SessionDep, key: ReadKey) -> Response:
    """``environment.json`` is what the worker recorded when it did (``source: worker``), else
    the API host's package versions (``source: api``; TensorFlow is not imported to get them)."""
    selected, missing = load_runs(session, [run_id])
    if missing:
        raise RecordNotFound("Run", run_id)
    data = run_bundle(selected[0], environment=api_environment())
    return zip_response(data, f"run-{run_id}.zip")


# --- helpers ----------------------------------------------


def select_runs(session: Session, runs: list[str] | None, experiment: str | None) -> list[RunData]:
    """The runs a report is about: listed ids, or an experiment's runs.

    Raises:
        ApiError: 422 when neither or both are given or too many ids; 404 naming the runs or the
            experiment that do not exist.
    """
    if (runs is None) == (experiment is None):
        raise invalid("query.runs", "give either 'runs' (run ids) or 'experiment' (an id)", runs)
    if experiment is not None:
        try:
            records.get_experiment(session, experiment)
        except RecordNotFound:
            raise ApiError(404, f"No experiment {experiment}", code="not_found") from None
        return load_experiment_runs(session, experiment)
    assert runs is not None
    ids = [part.strip() for value in runs for part in value.split(",") if part.strip()]
    if not ids:
        raise invalid("query.runs", "list at least one run id", runs)
    if len(ids) > MAX_RUNS:
        raise invalid("query.runs", f"at most {MAX_RUNS} runs per report", len(ids))
    selected, missing = load_runs(session, ids)
    if missing:
        raise ApiError(404, f"No such runs: {', '.join(missing)}", code="not_found")
    return selected


def table_response(table: Table, fmt: str, stem: str) -> Response:
    if fmt == "csv":
        return Response(
            table.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'},
        )
    if fmt == "md":
        return Response(table.to_markdown(), media_type="text/markdown; charset=utf-8")
    return Response(
        json.dumps(finite(table.to_json()), allow_nan=False, default=str),
        media_type="application/json",
    )
