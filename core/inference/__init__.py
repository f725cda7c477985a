"""Inference: a safe ``.keras`` loader and predictor, and SavedModel/ONNX/Keras export.

Every name is imported on first use (:mod:`core.lazy`): the predictor loads Keras and the
exports TensorFlow, while :mod:`core.inference.formats` stays light enough for the API process.
"""

from typing import TYPE_CHECKING

from core.inference.formats import EXPORT_FORMATS, ExportFormat
from core.lazy import lazy_attributes
from core.training.rundir import LABELS_FILE

if TYPE_CHECKING:
    from core.inference.export import (
        Exported,
        ExportError,
        export_keras,
        export_model,
        export_onnx,
        export_saved_model,
    )
    from core.inference.float32 import float32_model
    from core.inference.packaging import export_run_model, zip_folder
    from core.inference.predictor import ModelLoadError, Prediction, Predictor, load_keras_model

__all__ = [
    "EXPORT_FORMATS",
    "LABELS_FILE",
    "ExportError",
    "ExportFormat",
    "Exported",
    "ModelLoadError",
    "Prediction",
    "Predictor",
    "export_keras",
    "export_model",
    "export_onnx",
    "export_run_model",
    "export_saved_model",
    "float32_model",
    "load_keras_model",
    "zip_folder",
]

__getattr__ = lazy_attributes(
    __name__,
    {
        "core.inference.predictor": (
            "ModelLoadError", "Prediction", "Predictor", "load_keras_model",
        ),
        "core.inference.export": (
            "ExportError", "Exported", "export_keras", "export_model", "export_onnx",
            "export_saved_model",
        ),
        "core.inference.float32": ("float32_model",),
        "core.inference.packaging": ("export_run_model", "zip_folder"),
    },
)  # fmt: skip
