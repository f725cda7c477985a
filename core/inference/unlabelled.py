"""Batch prediction of unlabelled images: every file of a folder, one row each, bad files
reported by name (:mod:`core.data.unlabelled` lists and decodes them)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from core.data.unlabelled import DecodedChunk
from core.evaluation.predictions import Predictions
from core.inference.predictor import Predictor


def predict_unlabelled(
    predictor: Predictor, chunks: Iterable[DecodedChunk]
) -> tuple[Predictions, float]:
    """The predictor's outputs on every file of the chunks, in their order.

    Each image is brought to the model's input as the predict route brings an upload
    (:meth:`Predictor.probabilities_of`), so a file gets the probabilities an upload of the
    same bytes would. A file that did not decode keeps its row, with its reason and NaN
    probabilities; one bad file never fails the rest.

    Args:
        predictor: the model.
        chunks: decoded files (:func:`core.data.unlabelled.decode_chunks`, at the predictor's
            channels); the caller may stop them early (a job taken from its worker).

    Returns:
        The predictions (unlabelled: no labels, an error per row) and the seconds spent.
    """
    start = time.perf_counter()
    ids: list[str] = []
    errors: list[str] = []
    parts: list[np.ndarray] = []
    for chunk in chunks:
        probs = np.full((len(chunk.names), predictor.num_classes), np.nan, np.float32)
        good = [i for i, image in enumerate(chunk.images) if image is not None]
        images = [image for image in chunk.images if image is not None]
        if images:
            probs[good] = predictor.probabilities_of(images)
        ids += chunk.names
        errors += chunk.errors
        parts.append(probs)
    probabilities = (
        np.concatenate(parts) if parts else np.zeros((0, predictor.num_classes), np.float32)
    )
    predictions = Predictions.unlabelled(
        probabilities,
        predictor.class_names,
        multi_label=predictor.multi_label,
        ids=ids,
        errors=errors,
    )
    return predictions, time.perf_counter() - start
