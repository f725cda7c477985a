"""Batch prediction of an unlabelled folder: every file a row, by name, in order; a readable
file gets what predicting its bytes alone gives, an unreadable one its reason and no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.data.unlabelled import decode_chunks, list_unlabelled
from core.images import decode_image
from core.inference import Predictor
from core.inference.unlabelled import predict_unlabelled
from core.models import build_model
from tests.core.data.test_unlabelled_folders import NAMES, write_photos

SHAPE = (16, 16, 3)
CLASSES = ["cat", "dog", "bird"]


def test_every_file_is_predicted_as_its_bytes_alone_would_be(tmp_path: Path) -> None:
    model = build_model("resnet8", num_classes=3, input_shape=SHAPE)
    model.get_layer("preprocess").set_statistics(np.full(SHAPE, 120.0, np.float32))
    predictor = Predictor(model, class_names=CLASSES)
    listing = list_unlabelled(write_photos(tmp_path / "photos"))

    # Chunks of two, so that a chunk holds only unreadable files (empty.png, notes.txt).
    chunks = decode_chunks(listing, channels=predictor.channels, size=2)
    predictions, seconds = predict_unlabelled(predictor, chunks)

    assert predictions.ids == NAMES and seconds > 0
    assert predictions.class_names == CLASSES and predictions.labels is None
    bad = {"corrupt.jpg", "empty.png", "notes.txt"}
    assert {n for n, e in zip(NAMES, predictions.errors or [], strict=True) if e} == bad
    for i, name in enumerate(NAMES):
        row = predictions.probabilities[i]
        if name in bad:
            assert np.isnan(row).all()
            continue
        alone = predictor.probabilities_of([decode_image((listing.root / name).read_bytes())])
        np.testing.assert_allclose(row, alone[0], atol=1e-6)  # batched with others: 1e-6
        assert abs(float(row.sum()) - 1.0) < 1e-5
