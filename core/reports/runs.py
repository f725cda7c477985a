"""Runs as plain data: the one shape every table, figure and bundle is computed from.

Reports never touch a database: the service turns a run's records into a :class:`RunData` dict
once (``jobs.reports``), and everything here is a pure function over those dicts, so it can be
tested (and used from a notebook) without one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from core.models.specs import parse_architecture

# Config keys that do not change what is learned: runs that differ only in these share a recipe.
NOT_RECIPE = frozenset(
    {"seed", "progress_every", "tensorboard", "keep_epoch_checkpoints", "strategy", "xla"}
)


class EpochRow(TypedDict, total=False):
    """One epoch as reports see it: ``epoch`` and the :data:`~core.training.hooks.EPOCH_METRICS`."""

    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float | None
    seconds: float | None
    images_per_second: float | None


class RunData(TypedDict, total=False):
    """One run, as reports see it.

    Only ``id`` and ``architecture`` are required by every function; the rest may be missing or
    ``None`` and each table or figure says what it needs.
    """

    id: str
    label: str  # unique within one report: "resnet20", or "resnet20 s1" for seed 1
    architecture: str
    dataset: str
    status: str
    depth: int | None
    kind: str | None  # resnet, plain, preact, wide, resnext
    family: str | None  # cifar, imagenet
    seed: int | None
    config: dict[str, Any]
    metrics: dict[str, Any]  # test metrics: the run's summary or its test evaluation
    train_seconds: float | None
    epochs_planned: int | None
    epochs: list[EpochRow]
    progress: dict[str, Any] | None
    confusion_matrix: list[list[int]] | None
    class_names: list[str] | None
    eval_images_per_second: float | None
    experiment_id: str | None
    environment: dict[str, Any] | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


def architecture_info(name: str) -> tuple[int | None, str | None, str | None]:
    """``(depth, kind, family)`` of an architecture name, or ``None``s for an unknown one."""
    try:
        spec = parse_architecture(name)
    except ValueError:
        return None, None, None
    return spec.depth, spec.kind, spec.family


def recipe(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config without the keys that do not change what is learned (seed, logging, placement)."""
    return {k: v for k, v in config.items() if k not in NOT_RECIPE}


def label_runs(runs: Sequence[RunData]) -> list[RunData]:
    """Give each run a label unique within ``runs``: the architecture, then its seed, then id."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["architecture"]] = counts.get(r["architecture"], 0) + 1
    labelled: list[RunData] = []
    seen: set[str] = set()
    for r in runs:
        label = r["architecture"]
        if counts[label] > 1 and r.get("seed") is not None:
            label = f"{label} s{r.get('seed')}"
        if label in seen:
            label = f"{label} {r['id'][:6]}"
        seen.add(label)
        labelled.append(RunData(**{**r, "label": label}))
    return labelled


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (a diverged loss) replaced by ``None``: valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
