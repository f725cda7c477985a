"""Live progress as plain data: where a run is, and whether it trails the runs it should match.

A *twin* of a run is a finished run of the same architecture on the same data with the same
recipe (the config without seed and logging, :func:`core.reports.runs.recipe`). Twins predict
the curve a run should follow; :func:`behind_the_curve` flags a run whose latest epoch is worse
than theirs at the same epoch by a margin.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from core.reports.runs import EpochRow, RunData, recipe

# A run is behind when its accuracy trails the twins' mean by more than this (absolute, 0..1)…
ACCURACY_MARGIN = 0.02
# … or its loss exceeds the twins' mean by more than this fraction.
LOSS_MARGIN = 0.10


class Verdict(TypedDict):
    behind: bool
    epoch: int
    basis: str  # "validation" or "training": which metrics were compared
    accuracy: float | None
    expected_accuracy: float | None
    loss: float | None
    expected_loss: float | None
    accuracy_margin: float
    loss_margin: float
    twins: list[str]
    reasons: list[str]


def twins_of(run: RunData, candidates: Sequence[RunData]) -> list[RunData]:
    """The succeeded candidates with the run's architecture, data and recipe (not the run)."""
    mine = recipe(run.get("config") or {})
    return [
        c
        for c in candidates
        if c["id"] != run["id"]
        and c.get("status") == "succeeded"
        and c["architecture"] == run["architecture"]
        and c.get("dataset") == run.get("dataset")
        and recipe(c.get("config") or {}) == mine
    ]


def behind_the_curve(
    epochs: Sequence[EpochRow],
    twins: Sequence[Sequence[EpochRow]],
    *,
    twin_ids: Sequence[str] = (),
    accuracy_margin: float = ACCURACY_MARGIN,
    loss_margin: float = LOSS_MARGIN,
) -> Verdict | None:
    """Compare a run's latest epoch with its twins' at the same epoch.

    Validation metrics are compared when the run and every twin have them, else training
    metrics. Returns ``None`` when there is nothing to compare (no epoch yet, no twin that
    reached this epoch).
    """
    if not epochs:
        return None
    current = epochs[-1]
    epoch = current["epoch"]
    at_epoch = [
        (twin_id, row)
        for twin_id, history in zip_longest_ids(twin_ids, twins)
        for row in history
        if row.get("epoch") == epoch
    ]
    if not at_epoch:
        return None
    rows = [row for _, row in at_epoch]
    prefix = (
        "val_" if _has(current, rows, "val_accuracy") or _has(current, rows, "val_loss") else ""
    )
    accuracy = _value(current, prefix + "accuracy")
    loss = _value(current, prefix + "loss")
    expected_accuracy = _mean([_value(r, prefix + "accuracy") for r in rows])
    expected_loss = _mean([_value(r, prefix + "loss") for r in rows])
    reasons = []
    if (
        accuracy is not None
        and expected_accuracy is not None
        and accuracy < expected_accuracy - accuracy_margin
    ):
        reasons.append(
            f"{prefix}accuracy {accuracy:.4f} < twins' {expected_accuracy:.4f} "
            f"- {accuracy_margin:g} at epoch {epoch}"
        )
    if loss is not None and expected_loss is not None and loss > expected_loss * (1 + loss_margin):
        reasons.append(
            f"{prefix}loss {loss:.4f} > twins' {expected_loss:.4f} × {1 + loss_margin:g} "
            f"at epoch {epoch}"
        )
    return Verdict(
        behind=bool(reasons),
        epoch=epoch,
        basis="validation" if prefix else "training",
        accuracy=accuracy,
        expected_accuracy=expected_accuracy,
        loss=loss,
        expected_loss=expected_loss,
        accuracy_margin=accuracy_margin,
        loss_margin=loss_margin,
        twins=sorted({twin_id for twin_id, _ in at_epoch}),
        reasons=reasons,
    )


def zip_longest_ids(
    ids: Sequence[str], histories: Sequence[Sequence[EpochRow]]
) -> list[tuple[str, Sequence[EpochRow]]]:
    """Pair histories with their ids (``twin-<i>`` for ones without an id)."""
    return [(ids[i] if i < len(ids) else f"twin-{i}", h) for i, h in enumerate(histories)]


def snapshot(run: Mapping[str, Any], epochs: Sequence[EpochRow]) -> dict[str, Any]:
    """What the live view shows: status, progress through the run, ETA, the latest epoch.

    Args:
        run: ``status``, ``epochs_planned``, ``progress`` (the worker's last report: ``epoch``,
            ``epochs``, ``fraction`` within the epoch, ``eta_seconds``, ``images_per_second``).
        epochs: The finished epochs.
    """
    progress = dict(run.get("progress") or {})
    planned = progress.get("epochs") or run.get("epochs_planned")
    done = len(epochs)
    overall = None
    if planned:
        within = progress.get("fraction") if run.get("status") == "running" else None
        current = progress.get("epoch")
        if within is not None and current is not None:
            overall = ((current - 1) + float(within)) / planned
        else:
            overall = done / planned
        overall = max(0.0, min(1.0, overall))
    return {
        "status": run.get("status"),
        "epochs_completed": done,
        "epochs_planned": planned,
        "fraction": overall,
        "eta_seconds": progress.get("eta_seconds") if run.get("status") == "running" else None,
        "images_per_second": progress.get("images_per_second"),
        "batch": progress.get("batch"),
        "batches": progress.get("batches"),
        "latest": dict(epochs[-1]) if epochs else None,
    }


def _value(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def _has(current: EpochRow, rows: Sequence[EpochRow], key: str) -> bool:
    return current.get(key) is not None and all(r.get(key) is not None for r in rows)


def _mean(values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return statistics.fmean(numbers) if numbers else None
