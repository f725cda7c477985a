"""Which classes a model's probabilities name, best first: one rule for every place that labels.

The local predictor, the API's predict routes and stored evaluation predictions all rank the
same way. Single-label: the ``top_k`` most probable classes. Multi-label: every class whose
probability is at least ``threshold``, however many. Ties keep the class order (a stable sort),
so the answer does not depend on where it was computed.

Plain NumPy: the API process ranks without loading TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def rank_classes(
    probs: np.ndarray, *, multi_label: bool, top_k: int, threshold: float
) -> list[int]:
    """The indices of one image's chosen classes, most probable first.

    Args:
        probs: one image's probabilities, shape ``(num_classes,)``.
        multi_label: choose by ``threshold`` rather than by ``top_k``.
        top_k: single-label: how many classes (fewer if the model has fewer).
        threshold: multi-label: the least probability a chosen class has.
    """
    order = np.argsort(-probs, kind="stable")
    if multi_label:
        return [int(j) for j in order if probs[j] >= threshold]
    return [int(j) for j in order[:top_k]]


def ranked_labels(
    probs: np.ndarray,
    class_names: Sequence[str],
    *,
    multi_label: bool,
    top_k: int,
    threshold: float,
) -> list[dict[str, Any]]:
    """One image's labels as ``{"label", "index", "probability"}``, best first."""
    picks = rank_classes(probs, multi_label=multi_label, top_k=top_k, threshold=threshold)
    return [{"label": class_names[j], "index": j, "probability": float(probs[j])} for j in picks]
