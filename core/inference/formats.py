"""The formats a trained model is exported to: a light module (no Keras), so the CLI's options
and the API's query parameter name them without loading TensorFlow."""

from __future__ import annotations

import enum


class ExportFormat(enum.StrEnum):
    """What other servers load: TF Serving, ONNX Runtime (and Triton), Keras itself."""

    SAVEDMODEL = "savedmodel"  # a TF SavedModel with a ``serving_default`` signature
    ONNX = "onnx"  # ``model.onnx``: input ``image``, output ``probabilities``
    KERAS = "keras"  # ``model.keras``: the float32 model, loadable in safe mode


EXPORT_FORMATS = tuple(f.value for f in ExportFormat)
