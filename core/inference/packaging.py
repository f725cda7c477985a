"""A trained model exported in the folder layout model servers load, and zipped for download.

TF Serving (``tensorflow_model_server --model_base_path=/models/NAME``) and Triton load numbered
version folders under a model's base folder, and ignore other files there::

    NAME/1/                 the SavedModel (saved_model.pb, variables/), model.onnx or model.keras
    NAME/labels.json        the class names, as the trainer wrote them beside model.keras
    NAME/export.json        the format, its input and output, and what verification measured

:func:`export_run_model` writes that layout from a ``.keras`` file (the CLI's ``resnet export``
and the API's ``…/export`` download both use it); :func:`zip_folder` packs it.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from core.inference.export import (
    ONNX_INPUT,
    ONNX_OUTPUT,
    SAVED_MODEL_INPUT,
    SAVED_MODEL_OUTPUT,
    SERVING_SIGNATURE,
    Exported,
    ExportError,
    export_model,
)
from core.inference.formats import ExportFormat
from core.inference.predictor import load_keras_model
from core.training.rundir import LABELS_FILE

EXPORT_INFO_FILE = "export.json"
# Inside the version folder; None: the SavedModel is the version folder itself.
MODEL_FILES: dict[ExportFormat, str | None] = {
    ExportFormat.SAVEDMODEL: None,
    ExportFormat.ONNX: "model.onnx",
    ExportFormat.KERAS: "model.keras",
}


def export_run_model(
    model_path: str | Path,
    fmt: ExportFormat | str,
    base_dir: str | Path,
    *,
    version: int = 1,
    verify: bool = True,
) -> Exported:
    """Export the ``.keras`` model at ``model_path`` into ``base_dir/<version>/`` (see above).

    Args:
        model_path: a ``.keras`` file (loaded in safe mode); its ``labels.json`` is copied.
        fmt: ``savedmodel``, ``onnx`` or ``keras``.
        base_dir: the model's base folder (created); ``base_dir/<version>`` must not exist.
        version: the version folder's number (TF Serving serves the highest).
        verify: check the export against the Keras model (:func:`export_model`).

    Raises:
        ModelLoadError: the model file is missing or refused.
        ExportError: the version folder exists, or the export failed or was not faithful.
    """
    fmt = ExportFormat(fmt)
    if version < 1:
        raise ExportError(f"a model version is a positive number; got {version}.")
    model_path, base_dir = Path(model_path), Path(base_dir)
    version_dir = base_dir / str(version)
    if version_dir.exists():
        raise ExportError(f"{version_dir} exists already: remove it, or export another version.")
    model = load_keras_model(model_path)
    base_dir.mkdir(parents=True, exist_ok=True)
    name = MODEL_FILES[fmt]
    target = version_dir if name is None else version_dir / name
    try:
        exported = export_model(model, fmt, target, verify=verify)
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)  # no half export for a server to load
        raise
    labels = model_path.with_name(LABELS_FILE)
    if labels.is_file():
        shutil.copyfile(labels, base_dir / LABELS_FILE)
    info = {**exported.describe(), "version": version, **_interface(fmt, model)}
    info["path"] = str(target.relative_to(base_dir))
    (base_dir / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return exported


def zip_folder(folder: str | Path, out_file: str | Path) -> Path:
    """Zip ``folder`` with its own name as the top folder (``NAME/1/…``), files in name order."""
    folder, out_file = Path(folder), Path(out_file)
    with zipfile.ZipFile(out_file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return out_file


def _interface(fmt: ExportFormat, model: Any) -> dict[str, Any]:
    """What a client sends and gets back, in the export's own names."""
    height, width, channels = (int(d) for d in model.input_shape[1:])
    classes = int(model.output_shape[-1])
    image = {
        "dtype": "float32",
        "shape": [None, height, width, channels],
        "pixels": "0-255 (normalisation is inside the graph, as in training)",
    }
    output: dict[str, Any] = {"dtype": "float32", "shape": [None, classes]}
    if fmt == ExportFormat.SAVEDMODEL:
        return {
            "signature": SERVING_SIGNATURE,
            "input": {"name": SAVED_MODEL_INPUT, **image},
            "output": {"name": SAVED_MODEL_OUTPUT, **output},
        }
    if fmt == ExportFormat.ONNX:
        return {
            "input": {"name": ONNX_INPUT, **image},
            "output": {"name": ONNX_OUTPUT, **output},
        }
    return {"input": {"name": str(model.inputs[0].name), **image}, "output": output}
