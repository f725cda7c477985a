"""Label ranking, the one rule the predictor, the API and stored predictions follow."""

from __future__ import annotations

import numpy as np

from core.ranking import rank_classes, ranked_labels


def test_single_label_takes_the_top_k_best_first_and_ties_keep_class_order() -> None:
    probs = np.array([0.1, 0.3, 0.3, 0.2, 0.1], np.float32)
    assert rank_classes(probs, multi_label=False, top_k=3, threshold=0.5) == [1, 2, 3]
    assert rank_classes(probs, multi_label=False, top_k=9, threshold=0.5) == [1, 2, 3, 0, 4]


def test_multi_label_takes_every_class_at_or_over_the_threshold() -> None:
    probs = np.array([0.9, 0.2, 0.5, 0.7], np.float32)
    assert rank_classes(probs, multi_label=True, top_k=1, threshold=0.5) == [0, 3, 2]
    assert rank_classes(probs, multi_label=True, top_k=1, threshold=0.95) == []


def test_labels_carry_name_index_and_probability_as_plain_python() -> None:
    probs = np.array([0.25, 0.75], np.float32)
    labels = ranked_labels(probs, ["cat", "dog"], multi_label=False, top_k=1, threshold=0.5)
    assert labels == [{"label": "dog", "index": 1, "probability": 0.75}]
    assert type(labels[0]["index"]) is int and type(labels[0]["probability"]) is float
