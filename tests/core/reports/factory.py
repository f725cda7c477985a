"""Plain-data runs for the report tests (``make_run``): each test builds its own small set."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.reports.runs import RunData, architecture_info, label_runs
from jobs.records import EpochMetric, Evaluation, EvaluationStatus, Run, RunStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLASSES = ["cat", "dog", "ship", "frog", "truck"]


def make_run(
    run_id: str,
    architecture: str,
    *,
    accuracy: float | None = 0.9,
    seconds: float | None = 600.0,
    epochs: int = 3,
    dataset: str = "cifar10",
    seed: int = 0,
    status: str = "succeeded",
    confusion: list[list[int]] | None = None,
    config: dict[str, Any] | None = None,
    speed: float = 1000.0,
    **metrics: Any,
) -> RunData:
    """A run whose curves approach ``accuracy``; metrics as core's evaluation names them."""
    depth, kind, family = architecture_info(architecture)
    rows = []
    for e in range(1, epochs + 1):
        final = accuracy if accuracy is not None else 0.5
        rows.append(
            {
                "epoch": e,
                "loss": 2.0 / e,
                "accuracy": final - 0.3 / e,
                "val_loss": 2.2 / e,
                "val_accuracy": final - 0.35 / e,
                "learning_rate": 0.1,
                "seconds": (seconds or 0) / epochs,
                "images_per_second": speed,
            }
        )
    summary: dict[str, Any] = {}
    if accuracy is not None:
        summary = {
            "accuracy": accuracy,
            "precision_macro": accuracy - 0.01,
            "recall_macro": accuracy - 0.02,
            "f1_macro": accuracy - 0.015,
            **metrics,
        }
    return RunData(
        id=run_id,
        label=architecture,
        architecture=architecture,
        dataset=dataset,
        status=status,
        depth=depth,
        kind=kind,
        family=family,
        seed=seed,
        config=config or {"architecture": architecture, "data": dataset, "seed": seed},
        metrics=summary,
        train_seconds=seconds,
        epochs_planned=epochs,
        epochs=rows,  # type: ignore[typeddict-item]
        progress=None,
        confusion_matrix=confusion,
        class_names=["cat", "dog", "ship"][: len(confusion)] if confusion else None,
        eval_images_per_second=None,
        experiment_id=None,
        environment=None,
    )


def labelled(*runs: RunData) -> list[RunData]:
    return label_runs(list(runs))


def check_png(data: bytes) -> None:
    """A real PNG with something drawn on it: it decodes, and is not one flat colour."""
    import numpy as np
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and image.width > 200 and image.height > 150
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10.0, "a blank canvas"
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7].astype(int).tolist()}
    assert len(colours) > 20, f"only {len(colours)} colours"


def check_svg(data: bytes, *, texts: Iterable[str] = (), ids: Iterable[str] = ()) -> str:
    """A well-formed SVG document containing these texts (as <text>) and element ids."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
    shown = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    found_ids = {e.get("id") for e in root.iter() if e.get("id")}
    for text in texts:
        assert text in shown, f"{text!r} not among the SVG's texts"
    for wanted in ids:
        assert wanted in found_ids, f"no element with id {wanted!r}"
    return shown


def record_run(
    session: Session,
    architecture: str,
    *,
    accuracy: float,
    epoch_seconds: float,
    seed: int = 0,
    experiment_id: str | None = None,
    train_seconds: float | None = None,
    dataset: str = "cifar10",
    status: RunStatus = RunStatus.SUCCEEDED,
    confusion: list[list[int]] | None = None,
) -> Run:
    """Write a run, its two epochs and a test evaluation straight into the tables (no
    repository functions: what a worker would have left behind)."""
    config = {"architecture": architecture, "data": dataset, "epochs": 2, "seed": seed}
    run = Run(
        architecture=architecture,
        dataset=dataset,
        config=config,
        status=status,
        cancel_requested=False,
        attempts=1,
        max_attempts=3,
        epochs_planned=2,
        epochs_completed=2,
        created_at=T0 + timedelta(minutes=len(session.new) + seed),
        started_at=T0,
        finished_at=T0 + timedelta(hours=1),
        metrics={"accuracy": accuracy, "train_seconds": train_seconds}
        if train_seconds is not None
        else {"accuracy": accuracy},
        experiment_id=experiment_id,
    )
    session.add(run)
    session.flush()
    for epoch in (1, 2):
        session.add(
            EpochMetric(
                run_id=run.id,
                epoch=epoch,
                loss=1.0 / epoch,
                accuracy=accuracy - 0.1 / epoch,
                val_loss=1.1 / epoch,
                val_accuracy=accuracy - 0.12 / epoch,
                learning_rate=0.1,
                seconds=epoch_seconds,
                images_per_second=1000.0,
            )
        )
    session.add(
        Evaluation(
            run_id=run.id,
            split="test",
            status=EvaluationStatus.SUCCEEDED,
            accuracy=accuracy,
            precision_macro=accuracy - 0.01,
            recall_macro=accuracy - 0.02,
            f1_macro=accuracy - 0.03,
            images_per_second=5000.0,
            metrics={
                "accuracy": accuracy,
                "precision_macro": accuracy - 0.01,
                "recall_macro": accuracy - 0.02,
                "f1_macro": accuracy - 0.03,
                "confusion_matrix": confusion or [[9, 1], [2, 8]],
                "per_class": [{"class": c} for c in CLASSES[: len(confusion or [0, 0])]],
            },
        )
    )
    session.flush()
    return run
