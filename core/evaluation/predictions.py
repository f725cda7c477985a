"""Stored predictions: what a model said about every image of a split, kept so that any metric
can be recomputed later (another threshold, another top-k, a subset) without the model.

A predictions file is a NumPy ``.npz`` archive written with ``allow_pickle=False`` (plain arrays
only: loading one never runs code) holding

- ``probabilities``: (N, K) float32, the model's outputs (softmax or sigmoid);
- ``labels``: (N,) int64 class indices, or (N, K) uint8 indicators for multi-label data;
- ``class_names``: (K,) unicode;
- ``multi_label``: a 0-d bool;
- ``ids``: (N,) unicode, one per image, in the order of the split: the file's path relative to
  the data root where images are files, else ``<split>/<index>``.

Predictions of unlabelled images (``images:PATH``, :mod:`core.data.unlabelled`) have no true
labels, so the file has no ``labels`` (nothing is scored: :meth:`Predictions.score` refuses)
and holds one row per file of the folder, readable or not:

- ``ids``: the file's path relative to the folder, sorted;
- ``errors``: (N,) unicode, why the file could not be used (``""`` for a file that was);
- ``probabilities``: NaN in the rows of files that could not be used (no output exists).

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.evaluation.metrics import classification_metrics, multilabel_metrics
from core.ranking import rank_classes

FORMAT_VERSION = 1
# What a file holds; unlabelled images' files have "errors" in the place of "labels".
_KEYS = ("probabilities", "labels", "class_names", "multi_label", "ids", "format")


class PredictionsError(ValueError):
    """A predictions file is not one this module wrote, or is inconsistent."""


@dataclass(frozen=True)
class Predictions:
    """One model's outputs on one split, with the true labels and an id per image.

    Unlabelled images have ``labels`` None and ``errors`` (one per image, ``""`` where the
    image was read); labelled data has labels and no errors (its unreadable files were
    reported by the loader and are not rows here).
    """

    probabilities: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    multi_label: bool
    ids: list[str]
    errors: list[str] | None = None

    def __post_init__(self) -> None:
        probs, labels = self.probabilities, self.labels
        if probs.ndim != 2 or probs.shape[1] != len(self.class_names):
            raise PredictionsError(
                f"probabilities must be (N, {len(self.class_names)}); got {probs.shape}"
            )
        n = probs.shape[0]
        if (labels is None) == (self.errors is None):
            raise PredictionsError("predictions have either labels or (unlabelled) errors")
        if labels is not None:
            expected = (n, probs.shape[1]) if self.multi_label else (n,)
            if labels.shape != expected:
                raise PredictionsError(f"labels must have shape {expected}; got {labels.shape}")
        if self.errors is not None and len(self.errors) != n:
            raise PredictionsError(f"{len(self.errors)} errors for {n} predictions")
        if len(self.ids) != n:
            raise PredictionsError(f"{len(self.ids)} ids for {n} predictions")

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    @property
    def unreadable(self) -> int:
        """Images that could not be used (unlabelled images only; else 0)."""
        return sum(bool(e) for e in self.errors or ())

    @classmethod
    def unlabelled(
        cls,
        probabilities: np.ndarray,
        class_names: Sequence[str],
        *,
        multi_label: bool,
        ids: Sequence[str],
        errors: Sequence[str],
    ) -> Predictions:
        """Outputs on unlabelled images: one row per file, NaN rows where ``errors`` says why
        there is no output."""
        probs = np.array(probabilities, dtype=np.float32)
        failed = np.asarray([bool(e) for e in errors], dtype=bool)
        if len(failed) == len(probs):
            probs[failed] = np.nan
        return cls(
            probabilities=probs,
            labels=None,
            class_names=list(class_names),
            multi_label=multi_label,
            ids=list(ids),
            errors=list(errors),
        )

    @classmethod
    def from_outputs(
        cls,
        probabilities: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        *,
        multi_label: bool,
        ids: Sequence[str],
    ) -> Predictions:
        """From a forward pass: labels as a pipeline yields them (indices, (N, 1) or one-hot)."""
        y = np.asarray(labels)
        if multi_label:
            y = (y > 0.5).astype(np.uint8)
        elif y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0].astype(np.int64)
        elif y.ndim == 2:  # one-hot (or smoothed) targets
            y = y.argmax(axis=1).astype(np.int64)
        else:
            y = y.astype(np.int64)
        return cls(
            probabilities=np.asarray(probabilities, np.float32),
            labels=y,
            class_names=list(class_names),
            multi_label=multi_label,
            ids=list(ids),
        )

    def score(self, *, threshold: float = 0.5) -> dict[str, Any]:
        """The evaluation's metrics, recomputed (``threshold`` applies to multi-label data).

        Raises:
            PredictionsError: unlabelled images: there is nothing to score against.
        """
        if self.labels is None:
            raise PredictionsError("predictions of unlabelled images have no labels to score")
        if self.multi_label:
            return multilabel_metrics(
                self.labels, self.probabilities, self.class_names, threshold=threshold
            )
        return classification_metrics(self.labels, self.probabilities, self.class_names)

    def save(self, target: str | Path | IO[bytes]) -> None:
        """Write the ``.npz`` archive (to a path or a binary file object)."""
        arrays = {
            "probabilities": self.probabilities,
            "class_names": np.asarray(self.class_names, dtype=np.str_),
            "multi_label": np.asarray(self.multi_label),
            "ids": np.asarray(self.ids, dtype=np.str_),
            "format": np.asarray(FORMAT_VERSION),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
        else:
            arrays["errors"] = np.asarray(self.errors or [], dtype=np.str_)
        np.savez_compressed(target, **arrays)  # type: ignore[arg-type]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.save(buffer)
        return buffer.getvalue()

    @classmethod
    def load(cls, source: str | Path | IO[bytes]) -> Predictions:
        """Read an archive written by :meth:`save`.

        Raises:
            PredictionsError: not such an archive, or inconsistent arrays.
        """
        try:
            with np.load(source, allow_pickle=False) as archive:
                labelled = "errors" not in archive.files
                expected = _KEYS if labelled else [k for k in _KEYS if k != "labels"]
                missing = [key for key in expected if key not in archive.files]
                if missing:
                    raise PredictionsError(f"not a predictions file: no {', '.join(missing)}")
                if int(archive["format"]) != FORMAT_VERSION:
                    raise PredictionsError(f"unknown predictions format {archive['format']}")
                if not labelled and "labels" in archive.files:
                    raise PredictionsError("not a predictions file: both labels and errors")
                return cls(
                    probabilities=archive["probabilities"].astype(np.float32, copy=False),
                    labels=archive["labels"] if labelled else None,
                    class_names=[str(name) for name in archive["class_names"]],
                    multi_label=bool(archive["multi_label"]),
                    ids=[str(i) for i in archive["ids"]],
                    errors=None if labelled else [str(e) for e in archive["errors"]],
                )
        except PredictionsError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise PredictionsError(f"not a predictions file: {exc}") from exc

    def rows(
        self, *, top_k: int = 1, threshold: float = 0.5, start: int = 0, stop: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """One JSON-able row per image of ``[start, stop)``: id, true label(s), predicted
        label(s) with scores.

        Single-label rows give the ``top_k`` classes; multi-label rows every class whose score
        is at least ``threshold``. Unlabelled rows have no ``label`` and carry ``error`` (None,
        or why the file gave no predictions: then ``predictions`` is empty).
        """
        names = self.class_names
        for i in range(max(0, start), min(len(self), len(self) if stop is None else stop)):
            p = self.probabilities[i]
            row: dict[str, Any] = {"index": i, "id": self.ids[i]}
            if self.labels is not None:
                if self.multi_label:
                    row["label"] = [names[j] for j in np.flatnonzero(self.labels[i])]
                else:
                    row["label"] = names[int(self.labels[i])]
            error = self.errors[i] if self.errors is not None else ""
            picked = (
                []
                if error
                else rank_classes(p, multi_label=self.multi_label, top_k=top_k, threshold=threshold)
            )
            row["predictions"] = [{"label": names[j], "score": float(p[j])} for j in picked]
            if self.errors is not None:
                row["error"] = error or None
            yield row

    def csv_lines(self) -> Iterator[str]:
        """CSV text, a line at a time: ``index,id,label,predicted,score,p_<class>...``.

        Multi-label labels are joined with ``|``; ``predicted`` is the top class. Unlabelled
        images have no ``label`` column and an ``error`` one after ``score``; a file that gave
        no predictions has empty ``predicted``, ``score`` and ``p_`` fields.
        """
        labelled = self.labels is not None
        header = ["index", "id", "label"] if labelled else ["index", "id"]
        header += ["predicted", "score"] if labelled else ["predicted", "score", "error"]
        header += [f"p_{name}" for name in self.class_names]
        yield ",".join(_csv_field(h) for h in header) + "\n"
        names = self.class_names
        for i in range(len(self)):
            p = self.probabilities[i]
            fields = [str(i), self.ids[i]]
            if self.labels is not None:
                if self.multi_label:
                    fields.append("|".join(names[j] for j in np.flatnonzero(self.labels[i])))
                else:
                    fields.append(names[int(self.labels[i])])
            error = self.errors[i] if self.errors is not None else ""
            if error:
                fields += ["", "", error] + [""] * len(names)
            else:
                top = int(p.argmax())
                fields += [names[top], f"{p[top]:.6g}"] + ([] if labelled else [""])
                fields += [f"{value:.6g}" for value in p]
            yield ",".join(_csv_field(f) for f in fields) + "\n"


def _csv_field(text: str) -> str:
    # A field a spreadsheet would take for a formula is prefixed with ', as OWASP advises:
    # one starting with = + - @ (unless a plain number), TAB or CR (always: float() skips them).
    if text[:1] in ("\t", "\r") or (text[:1] in ("=", "+", "-", "@") and not _is_number(text)):
        text = "'" + text
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
