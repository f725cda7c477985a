"""Inference: a safe ``.keras`` loader and predictor, and SavedModel/ONNX export.

The exports go through TensorFlow: they are imported on first use, so that predicting does not
need TensorFlow under other Keras backends.
"""

from typing import TYPE_CHECKING

from core.inference.predictor import LABELS_FILE, ModelLoadError, Prediction, Predictor
from core.lazy import lazy_attributes

if TYPE_CHECKING:
    from core.inference.export import ExportError, export_onnx, export_saved_model

__all__ = [
    "LABELS_FILE",
    "ExportError",
    "ModelLoadError",
    "Prediction",
    "Predictor",
    "export_onnx",
    "export_saved_model",
]

__getattr__ = lazy_attributes(
    __name__, {"core.inference.export": ("ExportError", "export_onnx", "export_saved_model")}
)
