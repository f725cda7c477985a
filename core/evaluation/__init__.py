"""Evaluation: metrics in plain numpy, and a compiled forward pass over a dataset.

``from core.evaluation import classification_metrics`` does not import TensorFlow;
``evaluate_model``, ``score_dataset``, ``predict_dataset``, ``predict_arrays`` and
``make_forward`` load it on first use. :class:`Predictions` (stored outputs, rescored without
the model) is numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.evaluation.metrics import average_precision, classification_metrics, multilabel_metrics
from core.evaluation.predictions import Predictions, PredictionsError
from core.lazy import lazy_attributes

if TYPE_CHECKING:
    from core.evaluation.evaluate import (
        evaluate_model,
        make_forward,
        predict_arrays,
        predict_dataset,
        score_dataset,
    )

__all__ = [
    "Predictions",
    "PredictionsError",
    "average_precision",
    "classification_metrics",
    "evaluate_model",
    "make_forward",
    "multilabel_metrics",
    "predict_arrays",
    "predict_dataset",
    "score_dataset",
]


__getattr__ = lazy_attributes(
    __name__,
    {
        "core.evaluation.evaluate": (
            "evaluate_model",
            "make_forward",
            "predict_arrays",
            "predict_dataset",
            "score_dataset",
        )
    },
)
