"""Experiment design and summary as plain data: the cells of a grid or a random search, and the
mean ± std over seeds of what they gave.

A cell is one run: an architecture, a seed and hyperparameters given as dotted paths into a
training config (``"schedule.base_lr": 0.05``, ``"optimizer.weight_decay": 5e-4``,
``"epochs": 30``): the one override grammar of :func:`core.training.config.resolve_config`,
through which every cell's config is validated like any run's.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from core.models.specs import parse_architecture
from core.reports.tables import headline, mean_std

MAX_CELLS = 200
# Set by the experiment's own lists, not by grid or search axes.
RESERVED_PARAMS = frozenset({"architecture", "seed", "data", "dataset"})


class Cell(TypedDict):
    architecture: str
    seed: int
    params: dict[str, Any]  # dotted path → value


class Range(TypedDict, total=False):
    low: float
    high: float
    log: bool
    integer: bool
    choices: list[Any]


def plain_twin(architecture: str) -> str | None:
    """The plain net of a ResNet's depth (``resnet56`` → ``plain56``), if it exists."""
    try:
        spec = parse_architecture(architecture)
    except ValueError:
        return None
    if spec.kind != "resnet":
        return None
    twin = f"plain{spec.depth}"
    try:
        parse_architecture(twin)
    except ValueError:
        return None
    return twin


def with_plain_twins(architectures: Sequence[str]) -> list[str]:
    """The architectures, each ResNet followed by its plain twin (no duplicates)."""
    out: list[str] = []
    for name in architectures:
        for candidate in (name, plain_twin(name)):
            if candidate is not None and candidate not in out:
                out.append(candidate)
    return out


def grid_size(
    architectures: Sequence[str], seeds: Sequence[int], grid: Mapping[str, Sequence[Any]]
) -> int:
    """How many cells a grid has, without building them."""
    return len(architectures) * len(seeds) * math.prod(len(v) for v in grid.values())


def expand_grid(
    architectures: Sequence[str], seeds: Sequence[int], grid: Mapping[str, Sequence[Any]]
) -> list[Cell]:
    """Every combination: architecture × hyperparameters × seed (seeds vary fastest)."""
    keys = list(grid)
    cells: list[Cell] = []
    for architecture in architectures:
        for values in itertools.product(*(grid[k] for k in keys)):
            for seed in seeds:
                cells.append(
                    Cell(
                        architecture=architecture,
                        seed=seed,
                        params=dict(zip(keys, values, strict=True)),
                    )
                )
    return cells


def sample_random(
    architectures: Sequence[str],
    seeds: Sequence[int],
    space: Mapping[str, Range],
    *,
    trials: int,
    seed: int,
) -> list[Cell]:
    """``trials`` draws from ``space`` (the same draws for every architecture), each run per seed.

    A range is ``{"low", "high"}`` (uniform), with ``"log": true`` log-uniform, with
    ``"integer": true`` rounded; or ``{"choices": [...]}``. The draws depend only on ``seed``:
    the same request gives the same cells.
    """
    rng = random.Random(seed)
    draws = [{key: draw(space[key], rng) for key in sorted(space)} for _ in range(trials)]
    return [
        Cell(architecture=architecture, seed=s, params=dict(params))
        for architecture in architectures
        for params in draws
        for s in seeds
    ]


def draw(spec: Range, rng: random.Random) -> Any:
    """One value from a range (see :func:`sample_random`)."""
    if "choices" in spec:
        return rng.choice(list(spec["choices"]))
    low, high = float(spec["low"]), float(spec["high"])
    if spec.get("log"):
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if spec.get("integer"):
        return round(value)
    return float(f"{value:.6g}")  # readable in tables; far below any hyperparameter's precision


def check_range(spec: Mapping[str, Any]) -> str | None:
    """What is wrong with a range, or ``None``."""
    if "choices" in spec:
        if set(spec) - {"choices"}:
            return "a range is either {'choices': [...]} or {'low', 'high', 'log', 'integer'}"
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            return "choices must be a non-empty list"
        return None
    if set(spec) - {"low", "high", "log", "integer"}:
        return f"unknown keys {sorted(set(spec) - {'low', 'high', 'log', 'integer'})}"
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        return "low and high must be numbers"
    assert isinstance(low, int | float) and isinstance(high, int | float)
    if not low <= high:
        return f"low must not exceed high; got low={low}, high={high}"
    if spec.get("log") and low <= 0:
        return f"a log range needs low > 0; got {low}"
    return None


def check_param_path(path: str) -> str | None:
    """What is wrong with a hyperparameter path, or ``None`` (values are checked per cell)."""
    parts = path.split(".")
    if not path or any(not p.isidentifier() for p in parts) or len(parts) > 2:
        return "must be a config field or 'section.field' (e.g. 'schedule.base_lr')"
    if parts[0] in RESERVED_PARAMS:
        return f"{parts[0]!r} is set by the experiment's own list, not by a grid or search axis"
    return None


class Group(TypedDict):
    architecture: str
    params: dict[str, Any]
    runs: int
    statuses: dict[str, int]
    succeeded: int
    accuracy: float | None
    accuracy_std: float | None
    error: float | None
    error_std: float | None
    f1: float | None
    f1_std: float | None
    training_time: float | None
    training_time_std: float | None
    run_ids: list[str]


def aggregate(cells: Iterable[Mapping[str, Any]]) -> list[Group]:
    """Mean ± sample std over seeds, per (architecture, params).

    Args:
        cells: Each ``{"architecture", "params", "run_id", "status", "metrics",
            "train_seconds"}``; only succeeded runs enter the means.

    Returns:
        One group per distinct architecture and hyperparameters, in first-seen order, with
        accuracy, error, F1 (%) and training time (s) as mean and ``_std``.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for cell in cells:
        key = repr((cell["architecture"], sorted(cell.get("params", {}).items(), key=str)))
        groups.setdefault(key, []).append(cell)
    out: list[Group] = []
    for members in groups.values():
        done = [m for m in members if m.get("status") == "succeeded"]
        numbers = [headline(m.get("metrics") or {}) for m in done]
        statuses: dict[str, int] = {}
        for m in members:
            statuses[str(m.get("status"))] = statuses.get(str(m.get("status")), 0) + 1
        accuracy = mean_std([n["accuracy"] for n in numbers])
        error = mean_std([n["error"] for n in numbers])
        f1 = mean_std([n["f1"] for n in numbers])
        time = mean_std([m.get("train_seconds") for m in done])
        out.append(
            Group(
                architecture=str(members[0]["architecture"]),
                params=dict(members[0].get("params", {})),
                runs=len(members),
                statuses=statuses,
                succeeded=len(done),
                accuracy=accuracy[0],
                accuracy_std=accuracy[1],
                error=error[0],
                error_std=error[1],
                f1=f1[0],
                f1_std=f1[1],
                training_time=time[0],
                training_time_std=time[1],
                run_ids=[str(m.get("run_id")) for m in members],
            )
        )
    return out


def experiment_status(statuses: Sequence[str], *, cancelled: bool) -> str:
    """One word for an experiment from its runs' statuses.

    ``queued`` (nothing started), ``running`` (something queued, running or paused: an
    adaptive search's trials wait paused), and once every run is terminal: ``cancelled`` (it
    was cancelled), ``succeeded`` (all did, or were ``stopped`` early by the search's rule:
    that is a search working), else ``failed``.
    """
    if not statuses:
        return "cancelled" if cancelled else "succeeded"
    if any(s in ("queued", "running", "paused") for s in statuses):
        return "queued" if all(s == "queued" for s in statuses) else "running"
    if cancelled:
        return "cancelled"
    return "succeeded" if all(s in ("succeeded", "stopped") for s in statuses) else "failed"
