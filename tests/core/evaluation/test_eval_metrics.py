"""The numpy metrics against scikit-learn, and the multi-label ones against textbook formulas."""

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from core.evaluation.metrics import average_precision, classification_metrics, multilabel_metrics


def _softmax_like(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    p = rng.random((n, k)) ** 3
    return p / p.sum(axis=1, keepdims=True)


def _names(k: int) -> list[str]:
    return [f"c{i}" for i in range(k)]


def _check_against_sklearn(y: np.ndarray, probs: np.ndarray) -> dict:
    k = probs.shape[1]
    got = classification_metrics(y, probs, _names(k))
    pred = probs.argmax(axis=1)
    labels = list(range(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about absent classes
        assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert got["error"] == pytest.approx(1 - skm.accuracy_score(y, pred))
        assert got["error_percent"] == pytest.approx(100 * got["error"])
        for avg in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
            assert got[f"precision_{avg}"] == pytest.approx(p)
            assert got[f"recall_{avg}"] == pytest.approx(r)
            assert got[f"f1_{avg}"] == pytest.approx(f)
        p, r, f, s = skm.precision_recall_fscore_support(
            y, pred, labels=labels, average=None, zero_division=0
        )
        assert [c["precision"] for c in got["per_class"]] == pytest.approx(p)
        assert [c["recall"] for c in got["per_class"]] == pytest.approx(r)
        assert [c["f1"] for c in got["per_class"]] == pytest.approx(f)
        assert [c["support"] for c in got["per_class"]] == s.tolist()
        assert got["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
        assert got["loss"] == pytest.approx(skm.log_loss(y, probs, labels=labels), rel=1e-9)
        if k > 10:
            top5 = skm.top_k_accuracy_score(y, probs, k=5, labels=labels)
            assert got["top5_accuracy"] == pytest.approx(top5)
        else:
            assert got["top5_accuracy"] is None
    assert got["n"] == len(y)
    assert [c["class"] for c in got["per_class"]] == _names(k)
    json.dumps(got)  # plain Python types only
    return got


@pytest.mark.parametrize(("n", "k", "seed"), [(200, 3, 0), (500, 10, 1), (300, 20, 2), (7, 12, 3)])
def test_classification_matches_sklearn_on_random_predictions(n, k, seed):
    rng = np.random.default_rng(seed)
    _check_against_sklearn(rng.integers(0, k, n), _softmax_like(rng, n, k))


def test_classification_with_a_class_never_predicted_and_a_class_absent():
    rng = np.random.default_rng(4)
    n, k = 120, 5
    probs = _softmax_like(rng, n, k)
    probs[:, 3] = 0.0  # class 3 is never predicted (and gets probability 0: the loss clips)
    y = rng.integers(0, k, n)
    y[y == 4] = 0  # class 4 never occurs
    probs[:, 4] *= 0.01  # ... and is rarely predicted
    probs /= probs.sum(axis=1, keepdims=True)
    got = _check_against_sklearn(y, probs)
    assert got["per_class"][3]["precision"] == 0.0
    assert got["per_class"][4]["support"] == 0


def test_classification_class_neither_present_nor_predicted_is_left_out_of_macro():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0]])
    got = _check_against_sklearn(y, probs)
    # precision: class 0 → 1/1, class 1 → 2/3; class 2 has no row in y or predictions
    assert got["precision_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert got["per_class"][2] == {
        "class": "c2",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }


def test_classification_float32_probabilities_and_perfect_predictions():
    y = np.array([0, 1, 2, 1])
    probs = np.eye(3, dtype=np.float32)[y]
    got = _check_against_sklearn(y, probs)
    assert got["accuracy"] == 1.0 and got["error"] == 0.0
    assert got["loss"] == pytest.approx(-np.log(1 - np.finfo(np.float32).eps))


def test_top5_breaks_ties_like_sklearn():
    y = np.array([0, 11, 5])
    probs = np.full((3, 12), 1 / 12)  # all tied
    got = classification_metrics(y, probs, _names(12))
    assert got["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, probs, k=5, labels=list(range(12)))
    )
    assert got["top5_accuracy"] < 1.0


@pytest.mark.parametrize(
    ("y", "probs", "message"),
    [
        (np.array([0, 3]), np.full((2, 3), 1 / 3), r"\[0, 3\)"),
        (np.array([0]), np.full((2, 3), 1 / 3), "shape"),
        (np.array([0.0, 1.0]), np.full((2, 3), 1 / 3), "integer"),
        (np.array([], dtype=int), np.zeros((0, 3)), "non-empty"),
        (np.array([0, 1]), np.full((2, 4), 1 / 4), "class names"),
    ],
)
def test_classification_rejects_bad_input(y, probs, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y, probs, _names(3))


# ---------------------------------------------------------------------------- multi-label


def test_multilabel_hand_example_textbook_formulas():
    # 4 images, 3 labels; threshold 0.5.
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array(
        [
            [0.9, 0.6, 0.4],  # predicts {0, 1}: 0 right, 1 wrong, misses 2
            [0.2, 0.7, 0.1],  # predicts {1}: right
            [0.5, 0.3, 0.2],  # predicts {0} (0.5 >= threshold): right, misses 1
            [0.1, 0.2, 0.8],  # predicts {2}: wrong
        ]
    )
    got = multilabel_metrics(y, probs, ["a", "b", "c"])
    # per class: correct / predicted / ground truth
    # a: 2 / 2 / 2 → P 1, R 1;  b: 1 / 2 / 2 → P .5, R .5;  c: 0 / 1 / 1 → P 0, R 0
    cp, cr = (1 + 0.5 + 0) / 3, (1 + 0.5 + 0) / 3
    assert got["CP"] == pytest.approx(cp)
    assert got["CR"] == pytest.approx(cr)
    assert got["CF1"] == pytest.approx(2 * cp * cr / (cp + cr))
    op, orr = 3 / 5, 3 / 5
    assert got["OP"] == pytest.approx(op)
    assert got["OR"] == pytest.approx(orr)
    assert got["OF1"] == pytest.approx(2 * op * orr / (op + orr))
    assert got["subset_accuracy"] == pytest.approx(1 / 4)  # only image 1 is exactly right
    # AP of a: positives ranked 1st and 2nd → 1.  b: ranks 1 (0.7, +), 2 (0.6, −), 3 (0.3, +)
    # → (1 + 2/3) / 2.  c: ranks 1 (0.8, −), 2 (0.4, +) → 1/2.
    aps = [1.0, (1 + 2 / 3) / 2, 0.5]
    assert [c["ap"] for c in got["per_class"]] == pytest.approx(aps)
    assert got["mAP"] == pytest.approx(np.mean(aps))
    assert [c["support"] for c in got["per_class"]] == [2, 2, 1]
    bce = -np.mean(y * np.log(probs) + (1 - y) * np.log(1 - probs))
    assert got["loss"] == pytest.approx(bce)
    json.dumps(got)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multilabel_matches_sklearn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    n, k = 150, 8
    y = (rng.random((n, k)) < 0.3).astype(int)
    y[:, 5] = 0  # a label with no positives: no AP, left out of mAP
    probs = np.clip(y * 0.3 + rng.random((n, k)) * 0.7, 0, 1)
    probs[:, 6] = 0.1  # a label never predicted
    probs[:10, 2] = probs[10:20, 2]  # some tied scores
    got = multilabel_metrics(y, probs, _names(k), threshold=0.5)
    pred = (probs >= 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ap = [skm.average_precision_score(y[:, j], probs[:, j]) for j in range(k) if y[:, j].any()]
        assert got["mAP"] == pytest.approx(np.mean(ap))
        assert [c["ap"] for c in got["per_class"] if c["ap"] is not None] == pytest.approx(ap)
        assert got["per_class"][5]["ap"] is None
        assert got["CP"] == pytest.approx(
            skm.precision_score(y, pred, average="macro", zero_division=0)
        )
        assert got["CR"] == pytest.approx(
            skm.recall_score(y, pred, average="macro", zero_division=0)
        )
        assert got["OP"] == pytest.approx(skm.precision_score(y, pred, average="micro"))
        assert got["OR"] == pytest.approx(skm.recall_score(y, pred, average="micro"))
        assert got["OF1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
        assert got["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        f1 = skm.f1_score(y, pred, average=None, zero_division=0)
        assert [c["f1"] for c in got["per_class"]] == pytest.approx(f1)
        assert got["loss"] == pytest.approx(skm.log_loss(y.ravel(), probs.ravel()), rel=1e-9)


def test_multilabel_threshold_moves_predictions():
    y = np.array([[1, 0], [0, 1]])
    probs = np.array([[0.4, 0.2], [0.1, 0.45]])
    assert multilabel_metrics(y, probs, ["a", "b"])["OP"] == 0.0  # nothing predicted
    low = multilabel_metrics(y, probs, ["a", "b"], threshold=0.3)
    assert low["OP"] == low["OR"] == low["subset_accuracy"] == 1.0
    assert low["threshold"] == 0.3


def test_multilabel_rejects_non_indicator_labels():
    with pytest.raises(ValueError, match="indicator"):
        multilabel_metrics(np.array([[2, 0]]), np.array([[0.5, 0.5]]), ["a", "b"])


def test_average_precision_needs_a_positive():
    with pytest.raises(ValueError, match="positive"):
        average_precision(np.zeros(3), np.array([0.1, 0.2, 0.3]))
