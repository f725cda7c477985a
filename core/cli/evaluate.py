"""``resnet evaluate`` scores a model on a data split; ``resnet rescore`` its saved predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.output import (
    EXIT_FAILED,
    console,
    echo_json,
    err_console,
    fail,
    metrics_table,
    percent,
    warn,
)
from core.cli.predict import load_predictor


def evaluate(
    model: Annotated[Path, typer.Argument(help="A .keras model, or a run folder holding one.")],
    data: Annotated[str, typer.Option("--data", help="KIND:PATH of the data to score.")],
    split: Annotated[str, typer.Option(help="Which split of the data.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    json_out: Annotated[
        bool, typer.Option("--json", help="All metrics as JSON on stdout.")
    ] = False,
    save_predictions: Annotated[
        Path | None,
        typer.Option(
            help="Also write every image's probabilities here (.npz); `resnet rescore` reads it."
        ),
    ] = None,
) -> None:
    """Score a trained model on a data split: accuracy, error, precision/recall/F1."""
    from core.data import load_dataset, make_pipeline
    from core.evaluation import score_dataset

    predictor = load_predictor(model)
    try:
        dataset = load_dataset(data)
    except ValueError as exc:
        fail(f"--data {data}: {exc}")
    if split not in dataset.splits:
        fail(f"--split: {data} has no {split!r} split; it has {', '.join(dataset.splits)}.")
    if dataset.num_classes != predictor.num_classes:
        fail(
            f"the model has {predictor.num_classes} outputs but {data} has "
            f"{dataset.num_classes} classes."
        )
    if dataset.multi_label != predictor.multi_label:
        fail(
            f"the model is {'multi' if predictor.multi_label else 'single'}-label; the data is not."
        )
    if list(dataset.class_names) != list(predictor.class_names):
        warn(
            "the data's class names differ from the model's labels; scoring by class index "
            f"(data: {dataset.class_names[:5]}…, model: {predictor.class_names[:5]}…)."
        )
    images = dataset.splits[split]
    ds = make_pipeline(
        images, batch_size=batch_size, training=False, image_shape=predictor.input_shape
    )
    target = err_console if json_out else console
    with target.status(f"evaluating on {len(images)} {split} images"):
        metrics, predictions = score_dataset(
            predictor.model,
            ds,
            class_names=predictor.class_names,
            multi_label=predictor.multi_label,
            ids=images.names,
        )
    metrics["split"] = split
    if save_predictions is not None:
        try:
            predictions.save(save_predictions)
        except OSError as exc:
            fail(f"--save-predictions {save_predictions}: {exc.strerror or exc}", EXIT_FAILED)
        warn(f"predictions of {len(predictions)} images written to {save_predictions}")
    _show_metrics(f"{model} on {data} ({split})", metrics, json_out=json_out)


def rescore(
    predictions: Annotated[
        Path, typer.Argument(help="A predictions file (.npz) from evaluate or the service.")
    ],
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Multi-label decision threshold.")
    ] = 0.5,
    json_out: Annotated[
        bool, typer.Option("--json", help="All metrics as JSON on stdout.")
    ] = False,
) -> None:
    """Recompute an evaluation's metrics from its stored predictions, without the model."""
    from core.evaluation import Predictions, PredictionsError

    if not predictions.is_file():
        fail(f"{predictions}: not found.")
    try:
        kept = Predictions.load(predictions)
    except PredictionsError as exc:
        fail(f"{predictions}: {exc}")
    metrics = kept.score(threshold=threshold)
    if kept.multi_label:
        metrics["threshold"] = threshold
    _show_metrics(f"{predictions} ({len(kept)} images)", metrics, json_out=json_out)


def _show_metrics(title: str, metrics: dict[str, Any], *, json_out: bool) -> None:
    if json_out:
        echo_json(metrics)
        return
    console.print(f"{escape(title)}:", highlight=False, soft_wrap=True)
    console.print(metrics_table(metrics))
    per_class = metrics.get("per_class") or []
    if 0 < len(per_class) <= 20:
        table = Table(title="per class", title_justify="left")
        for column in ("class", "precision", "recall", "F1", "support"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for row in per_class:
            table.add_row(
                escape(str(row["class"])), percent(row["precision"]), percent(row["recall"]),
                percent(row["f1"]), str(row["support"]),
            )  # fmt: skip
        console.print(table)
