"""Inference: a safe ``.keras`` loader and predictor, and SavedModel/ONNX export."""

from core.inference.export import ExportError, export_onnx, export_saved_model
from core.inference.predictor import LABELS_FILE, ModelLoadError, Prediction, Predictor

__all__ = [
    "LABELS_FILE",
    "ExportError",
    "ModelLoadError",
    "Prediction",
    "Predictor",
    "export_onnx",
    "export_saved_model",
]
