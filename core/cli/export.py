"""``resnet export``: a run's model as a TF SavedModel, an ONNX model or a float32 ``.keras``.

Writes the layout model servers load (:mod:`core.inference.packaging`)::

    OUT/1/             the SavedModel, model.onnx or model.keras
    OUT/labels.json    class names
    OUT/export.json    input, output and what the verification measured

so ``tensorflow_model_server --model_base_path=$PWD/OUT`` serves a SavedModel export as it is.
The default OUT is ``RUN_DIR/export/FORMAT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from core.cli.output import console, echo_json, err_console, fail
from core.inference.formats import ExportFormat
from core.training.rundir import MODEL_FILE


def export(
    run: Annotated[Path, typer.Argument(help="A run folder (or a .keras model file).")],
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", case_sensitive=False, help="savedmodel, onnx or keras."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="The model's base folder; the export goes in OUT/VERSION/."),
    ] = None,
    model_version: Annotated[
        int, typer.Option(min=1, help="The version folder's number (TF Serving's).")
    ] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Export a trained model for another server, as float32 (mixed-precision runs are cast),
    checked against the Keras model; exits 2 if the export fails or differs."""
    from core.inference import ExportError, ModelLoadError, export_run_model

    model_path = run / MODEL_FILE if run.is_dir() else run
    folder = run if run.is_dir() else run.parent
    base = out if out is not None else folder / "export" / fmt.value
    with err_console.status(f"exporting {escape(str(model_path))} to {fmt.value}"):
        try:
            exported = export_run_model(model_path, fmt, base, version=model_version)
        except (ExportError, ModelLoadError) as exc:
            fail(str(exc))
    facts = {**exported.describe(), "base_path": str(base), "version": model_version}
    if json_out:
        echo_json(facts)
        return
    diffs = facts["verified_max_abs_diff"]
    console.print(f"[bold]{escape(str(exported.path))}[/bold]", highlight=False)
    console.print(
        f"  float32 graph (trained in {exported.trained_precision}); largest difference from "
        f"the Keras model: {diffs['float32_keras_model']:.2g} "
        f"(from the model as trained: {diffs['trained_keras_model']:.2g})",
        highlight=False,
    )
