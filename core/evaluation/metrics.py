"""Classification metrics in plain numpy, returned as JSON-ready dicts.

Definitions follow scikit-learn's (``zero_division=0``: a ratio with a zero denominator is 0), so
the tests can check every number against it; nothing here imports TensorFlow or scikit-learn.

- :func:`classification_metrics`: single-label (softmax) results such as CIFAR-10 or ImageNet,
  reported as He et al. (2016) do: error rate, and top-5 accuracy on many-class data.
- :func:`multilabel_metrics`: multi-label (sigmoid) results such as MS COCO: mAP plus the
  per-class (CP, CR, CF1) and overall (OP, OR, OF1) precision/recall/F1 at a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

TOP_K = 5


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Metrics of single-label predictions; the predicted class is the arg-max.

    Macro averages run over the classes that occur in ``y_true`` or in the predictions, as
    scikit-learn's do; a class that is neither present nor predicted still gets a ``per_class``
    row (all zeros). Weighted averages weight each class by its support.

    Args:
        y_true: (N,) integer class indices in ``[0, K)``.
        probs: (N, K) predicted probabilities.
        class_names: K names, in index order.

    Returns:
        ``n``, ``accuracy``, ``error`` (``1 - accuracy``, a fraction), ``error_percent``,
        ``top5_accuracy`` (``None`` unless K > 10), ``loss`` (mean cross-entropy of the clipped
        probabilities), ``precision_macro``/``recall_macro``/``f1_macro`` and their ``_weighted``
        twins, ``per_class`` (a list of ``{class, precision, recall, f1, support}``) and
        ``confusion_matrix`` (K × K nested lists; rows are true classes, columns predicted).

    Raises:
        ValueError: on mismatched shapes, an empty set or a label outside ``[0, K)``.
    """
    probs = _as_probs(probs, class_names)
    n, k = probs.shape
    y_true = np.asarray(y_true)
    if y_true.shape != (n,):
        raise ValueError(f"y_true must have shape ({n},) to match probs; got {y_true.shape}.")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices; got dtype {y_true.dtype}.")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(
            f"y_true holds labels in [{y_true.min()}, {y_true.max()}]; expected [0, {k})."
        )
    y_true = y_true.astype(np.int64)
    y_pred = probs.argmax(axis=1)

    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)

    present = (support + predicted) > 0
    weights = support / n
    accuracy = float(tp.sum() / n)

    # The clip follows scikit-learn's log_loss: the machine epsilon of the probabilities' dtype.
    eps = np.finfo(probs.dtype).eps
    p_true = np.clip(probs[np.arange(n), y_true].astype(np.float64), eps, 1 - eps)

    top5 = None
    if k > 10:
        # Stable ordering breaks ties the way scikit-learn's top_k_accuracy_score does, so a
        # model with flat outputs is not credited with every tied class.
        ranked = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :TOP_K]
        top5 = float((ranked == y_true[:, None]).any(axis=1).mean())

    return {
        "n": int(n),
        "accuracy": accuracy,
        "error": 1.0 - accuracy,
        "error_percent": 100.0 * (1.0 - accuracy),
        "top5_accuracy": top5,
        "loss": float(-np.log(p_true).mean()),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "f1_macro": float(f1[present].mean()),
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "per_class": [
            {
                "class": str(name),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        ],
        "confusion_matrix": cm.tolist(),
    }


def multilabel_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Metrics of multi-label predictions; a label is predicted when its probability >= threshold.

    - ``mAP``: the mean, over classes with at least one positive, of average precision as
      scikit-learn's ``average_precision_score`` defines it (Σₙ (Rₙ − Rₙ₋₁) Pₙ over the distinct
      score thresholds, no interpolation). A class without positives has ``ap = None``.
    - ``CP``, ``CR``: precision and recall of each class, averaged over all K classes;
      ``CF1 = 2·CP·CR / (CP + CR)``.
    - ``OP``, ``OR``, ``OF1``: the same counted over all (image, label) pairs (micro averages).

    Args:
        y_true: (N, K) indicator matrix of {0, 1}.
        probs: (N, K) per-label probabilities.
        class_names: K names, in index order.
        threshold: decision threshold on each probability.

    Returns:
        ``n``, ``threshold``, ``mAP``, ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1``,
        ``subset_accuracy`` (every label of an image right), ``loss`` (mean binary cross-entropy
        over all N × K entries) and ``per_class`` (``{class, ap, precision, recall, f1, support}``).

    Raises:
        ValueError: on mismatched shapes, an empty set or labels other than 0 and 1.
    """
    probs = _as_probs(probs, class_names)
    n, k = probs.shape
    y_true = np.asarray(y_true)
    if y_true.shape != (n, k):
        raise ValueError(f"y_true must have shape ({n}, {k}) to match probs; got {y_true.shape}.")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must be an indicator matrix of 0s and 1s.")
    y = y_true.astype(bool)
    pred = probs >= threshold

    tp = (y & pred).sum(axis=0)
    support = y.sum(axis=0)
    predicted = pred.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    cp, cr = float(precision.mean()), float(recall.mean())
    op = float(_safe_div(tp.sum(), predicted.sum()))
    orr = float(_safe_div(tp.sum(), support.sum()))

    ap: list[float | None] = [
        average_precision(y[:, j], probs[:, j]) if support[j] else None for j in range(k)
    ]
    scored = [a for a in ap if a is not None]

    eps = np.finfo(probs.dtype).eps
    p = np.clip(probs.astype(np.float64), eps, 1 - eps)
    bce = -np.where(y, np.log(p), np.log1p(-p)).mean()

    return {
        "n": int(n),
        "threshold": float(threshold),
        "mAP": float(np.mean(scored)) if scored else None,
        "CP": cp,
        "CR": cr,
        "CF1": _harmonic(cp, cr),
        "OP": op,
        "OR": orr,
        "OF1": _harmonic(op, orr),
        "subset_accuracy": float((y == pred).all(axis=1).mean()),
        "loss": float(bce),
        "per_class": [
            {
                "class": str(name),
                "ap": ap[j],
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(support[j]),
            }
            for j, name in enumerate(class_names)
        ],
    }


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one class (scikit-learn's definition); needs at least one positive.

    Tied scores form one threshold, so the result does not depend on the order of tied samples.
    """
    y_true = np.asarray(y_true, dtype=bool)
    positives = int(y_true.sum())
    if positives == 0:
        raise ValueError("average precision is undefined without a positive sample.")
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    s, y = np.asarray(scores)[order], y_true[order]
    # The last index of each run of equal scores: one point of the precision–recall curve each.
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[ends]
    precision = tps / (ends + 1)
    recall = tps / positives
    return float(max(0.0, np.sum(np.diff(recall, prepend=0.0) * precision)))


def _as_probs(probs: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty (N, K) array; got shape {probs.shape}.")
    if probs.shape[1] != len(class_names):
        raise ValueError(
            f"probs has {probs.shape[1]} columns but {len(class_names)} class names were given."
        )
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    return probs


def _safe_div(num: Any, den: Any) -> Any:
    """num / den elementwise, 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0
