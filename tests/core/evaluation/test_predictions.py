"""Stored predictions: the archive round trip, rescoring, rows and CSV, and files it refuses."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.evaluation import (
    Predictions,
    PredictionsError,
    classification_metrics,
    multilabel_metrics,
)

NAMES = ["cat", "dog", "=cmd()"]


def single(n: int = 12, seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, n)
    ids = [f"pets/{NAMES[y]}/{i:03d}.png" for i, y in enumerate(labels)]
    return Predictions.from_outputs(probs, labels, NAMES, multi_label=False, ids=ids)


def test_round_trip_keeps_every_array_and_the_metrics(tmp_path: Path) -> None:
    kept = single()
    kept.save(tmp_path / "p.npz")
    back = Predictions.load(tmp_path / "p.npz")
    assert back.class_names == NAMES and back.ids == kept.ids and not back.multi_label
    np.testing.assert_array_equal(back.probabilities, kept.probabilities)
    np.testing.assert_array_equal(back.labels, kept.labels)
    assert back.score() == classification_metrics(kept.labels, kept.probabilities, NAMES)
    assert Predictions.load(io.BytesIO(kept.to_bytes())).ids == kept.ids


@pytest.mark.parametrize("form", ["indices", "column", "one_hot"])
def test_labels_in_any_form_a_pipeline_yields_become_indices(form: str) -> None:
    y = np.array([2, 0, 1, 1])
    given = {"indices": y, "column": y[:, None], "one_hot": np.eye(3)[y]}[form]
    kept = Predictions.from_outputs(
        np.full((4, 3), 1 / 3), given, NAMES, multi_label=False, ids=list("abcd")
    )
    assert kept.labels.dtype == np.int64
    np.testing.assert_array_equal(kept.labels, y)


def test_multi_label_rescored_at_another_threshold() -> None:
    rng = np.random.default_rng(3)
    probs = rng.uniform(size=(20, 3)).astype(np.float32)
    truth = (rng.uniform(size=(20, 3)) > 0.5).astype(np.float32)
    kept = Predictions.from_outputs(
        probs, truth, NAMES, multi_label=True, ids=[str(i) for i in range(20)]
    )
    assert kept.labels.dtype == np.uint8
    for threshold in (0.3, 0.5, 0.8):
        assert kept.score(threshold=threshold) == multilabel_metrics(
            truth, probs, NAMES, threshold=threshold
        )
    assert kept.score(threshold=0.3) != kept.score(threshold=0.8)
    row = next(kept.rows(threshold=0.3, start=4, stop=5))
    assert row["index"] == 4
    assert row["label"] == [NAMES[j] for j in np.flatnonzero(truth[4])]
    picked = [p["label"] for p in row["predictions"]]
    assert sorted(picked) == sorted(NAMES[j] for j in np.flatnonzero(probs[4] >= 0.3))
    scores = [p["score"] for p in row["predictions"]]
    assert scores == sorted(scores, reverse=True)


def test_rows_give_the_top_k_of_a_page() -> None:
    kept = single(n=10)
    rows = list(kept.rows(top_k=2, start=3, stop=7))
    assert [r["index"] for r in rows] == [3, 4, 5, 6]
    for row in rows:
        p = kept.probabilities[row["index"]]
        assert [s["label"] for s in row["predictions"]] == [NAMES[j] for j in np.argsort(-p)[:2]]
        assert row["id"] == kept.ids[row["index"]]
        assert row["label"] == NAMES[kept.labels[row["index"]]]
    assert list(kept.rows(start=20)) == []


def test_csv_has_a_row_per_image_and_defuses_formulas() -> None:
    kept = single(n=6)
    text = "".join(kept.csv_lines())
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["index", "id", "label", "predicted", "score", "p_cat", "p_dog", "p_=cmd()"]
    assert len(table) == 7
    for row in table[1:]:
        i = int(row[0])
        assert row[1] == kept.ids[i]
        probs = [float(v) for v in row[5:]]
        np.testing.assert_allclose(probs, kept.probabilities[i], rtol=1e-5)
        assert row[3].lstrip("'") == NAMES[int(np.argmax(kept.probabilities[i]))]
        assert not row[2].startswith("=")  # a class named like a formula is quoted with '


def test_csv_defuses_fields_starting_with_tab_or_cr() -> None:
    from core.evaluation.predictions import _csv_field

    for cell in ("\t=cmd()", "\r=cmd()", "\t1", "=1+2", "@x", "-cmd"):
        assert _csv_field(cell).lstrip('"').startswith("'"), cell
    assert _csv_field("-1.5") == "-1.5" and _csv_field("cat") == "cat"


def test_inconsistent_arrays_are_refused() -> None:
    with pytest.raises(PredictionsError, match="probabilities must be"):
        Predictions.from_outputs(np.zeros((3, 2)), [0, 1, 0], NAMES, multi_label=False, ids="abc")
    with pytest.raises(PredictionsError, match="2 ids for 3"):
        Predictions.from_outputs(np.zeros((3, 3)), [0, 1, 0], NAMES, multi_label=False, ids="ab")


def test_files_it_did_not_write_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(PredictionsError, match="not a predictions file"):
        Predictions.load(tmp_path / "text.npz")
    (tmp_path / "cut.npz").write_bytes(single().to_bytes()[:200])  # a truncated archive
    with pytest.raises(PredictionsError, match="not a predictions file"):
        Predictions.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", probabilities=np.zeros((1, 3)))
    with pytest.raises(PredictionsError, match="no labels"):
        Predictions.load(tmp_path / "other.npz")
    # An object array would need pickle to load: refused, never unpickled.
    buffer = io.BytesIO(single().to_bytes())
    with zipfile.ZipFile(buffer) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    objects = io.BytesIO()
    np.save(objects, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    members["ids.npy"] = objects.getvalue()
    forged = tmp_path / "forged.npz"
    with zipfile.ZipFile(forged, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(PredictionsError, match="not a predictions file"):
        Predictions.load(forged)


def unlabelled() -> Predictions:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=4)
    errors = ["", "corrupt or truncated image: broken data stream", "", "not an image file"]
    ids = ["2024/a.jpg", 'b,"odd".jpg', "c.png", "notes.txt"]
    return Predictions.unlabelled(probs, NAMES, multi_label=False, ids=ids, errors=errors)


def test_unlabelled_predictions_keep_no_labels_and_an_error_per_file(tmp_path: Path) -> None:
    kept = unlabelled()
    assert not kept.labelled and kept.labels is None and kept.unreadable == 2
    assert np.isnan(kept.probabilities[[1, 3]]).all()
    assert not np.isnan(kept.probabilities[[0, 2]]).any()
    kept.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as archive:
        assert "labels" not in archive.files  # absent, not invented
        assert list(archive["errors"]) == kept.errors
    back = Predictions.load(tmp_path / "p.npz")
    assert back.ids == kept.ids and back.errors == kept.errors and back.labels is None
    np.testing.assert_array_equal(back.probabilities, kept.probabilities)  # NaN == NaN here
    with pytest.raises(PredictionsError, match="no labels to score"):
        back.score()


def test_unlabelled_rows_and_csv_have_no_label_and_say_why_a_file_has_no_predictions() -> None:
    kept = unlabelled()
    rows = list(kept.rows(top_k=2))
    assert all("label" not in row for row in rows)
    assert [row["error"] for row in rows] == [None, kept.errors[1], None, kept.errors[3]]
    assert rows[1]["predictions"] == [] and rows[3]["predictions"] == []
    best = int(kept.probabilities[0].argmax())
    assert rows[0]["predictions"][0] == {
        "label": NAMES[best],
        "score": float(kept.probabilities[0, best]),
    }
    table = list(csv.reader(io.StringIO("".join(kept.csv_lines()))))
    assert table[0] == ["index", "id", "predicted", "score", "error", "p_cat", "p_dog", "p_=cmd()"]
    assert [r[1] for r in table[1:]] == kept.ids
    assert table[2][2:] == ["", "", kept.errors[1], "", "", ""]
    assert table[1][2].removeprefix("'") == NAMES[best] and table[1][4] == ""  # (formulas escaped)
    np.testing.assert_allclose([float(v) for v in table[1][5:]], kept.probabilities[0], rtol=1e-5)


def test_a_file_with_both_labels_and_errors_or_neither_is_refused(tmp_path: Path) -> None:
    kept = unlabelled()
    arrays = {
        "probabilities": kept.probabilities, "class_names": np.asarray(NAMES),
        "multi_label": np.asarray(False), "ids": np.asarray(kept.ids), "format": np.asarray(1),
    }  # fmt: skip
    np.savez(tmp_path / "neither.npz", **arrays)
    np.savez(
        tmp_path / "both.npz",
        **arrays,
        labels=np.zeros(4, np.int64),
        errors=np.asarray(kept.errors),
    )
    with pytest.raises(PredictionsError, match="no labels"):
        Predictions.load(tmp_path / "neither.npz")
    with pytest.raises(PredictionsError, match="both labels and errors"):
        Predictions.load(tmp_path / "both.npz")
