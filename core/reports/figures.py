"""The study's figures from recorded runs, as PNG or SVG bytes.

Each figure is a pure function of :class:`~core.reports.runs.RunData` dicts::

    png = figure("error_vs_depth", runs, fmt="png")

- ``training_time_vs_depth``: training time against depth, per kind (the seed's Figure 1);
- ``error_vs_depth``: test error against depth beside the paper's (He et al. 2016, Table 6);
- ``curves``: training and validation loss and accuracy per epoch, per run;
- ``plain_vs_residual``: training error per epoch of plain nets (dashed) and ResNets (solid) of
  the same depths on one chart (the paper's Figure 6);
- ``confusion``: the confusion matrix of each run's test evaluation as a heat map;
- ``throughput``: training images/s per architecture (and evaluation images/s where known).

matplotlib is imported inside the functions (Agg, object-oriented API, no pyplot state) so that
importing this module costs nothing. SVG keeps text as ``<text>`` (run names can be searched),
and every drawn series carries an id naming its run (``run-<id>``).
"""

from __future__ import annotations

import io
import math
import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from core.reports.references import CIFAR10
from core.reports.runs import RunData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ImageFormat = Literal["png", "svg"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "svg")
MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
MAX_CONFUSION_PANELS = 4

# rcParams are process-wide: one figure is saved at a time.
_SAVE_LOCK = threading.Lock()


class FigureDataError(ValueError):
    """The runs lack what the figure needs (no finished epochs, no confusion matrix…)."""


def figure(name: str, runs: Sequence[RunData], *, fmt: ImageFormat | str = "png") -> bytes:
    """Draw the figure ``name`` for ``runs`` as ``fmt`` bytes.

    Raises:
        ValueError: An unknown figure or format.
        FigureDataError: The runs have nothing this figure can show.
    """
    if name not in FIGURES:
        raise ValueError(f"Unknown figure: {name!r}. Expected one of {', '.join(FIGURES)}")
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"Unknown image format: {fmt!r}. Expected png or svg")
    return FIGURES[name](runs, fmt)


# --- the figures -----------------------------------------------------------------------------


def training_time_vs_depth(runs: Sequence[RunData], fmt: str = "png") -> bytes:
    """Training time (minutes) against depth, one line per kind (resnet, plain, …)."""
    points = []
    for r in runs:
        depth, seconds = _num(r, "depth"), _num(r, "train_seconds")
        if depth and seconds is not None:
            points.append((r, depth, seconds / 60.0))
    if not points:
        raise FigureDataError("none of the runs has a depth and a recorded training time")
    fig, ax = _figure()
    for kind, members in _by(points, lambda p: p[0].get("kind") or "other").items():
        xs, ys = _mean_by_x([(d, t) for _, d, t in members])
        line = ax.plot(xs, ys, marker="o", label=kind)[0]
        line.set_gid(f"series-{kind}")
        for r, d, t in members:
            dot = ax.scatter([d], [t], s=12, color=line.get_color(), alpha=0.5)
            dot.set_gid(f"run-{r['id']}")
            ax.annotate(r["label"], (d, t), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("training time (min)")
    ax.set_title("Training time against depth")
    _log_x_if_wide(ax, [d for _, d, _ in points])
    ax.legend()
    return _save(fig, fmt)


def error_vs_depth(runs: Sequence[RunData], fmt: str = "png") -> bytes:
    """Test error (%) against depth per kind, beside the paper's CIFAR-10 error."""
    points = []
    for r in runs:
        accuracy, depth = _test_accuracy(r), _num(r, "depth")
        if depth and accuracy is not None:
            points.append((r, depth, 100.0 * (1.0 - accuracy)))
    if not points:
        raise FigureDataError("none of the runs has a depth and a test accuracy")
    fig, ax = _figure()
    for kind, members in _by(points, lambda p: p[0].get("kind") or "other").items():
        xs, ys = _mean_by_x([(d, e) for _, d, e in members])
        line = ax.plot(xs, ys, marker="o", label=f"{kind} (these runs)")[0]
        line.set_gid(f"series-{kind}")
        for r, d, e in members:
            dot = ax.scatter([d], [e], s=12, color=line.get_color(), alpha=0.5)
            dot.set_gid(f"run-{r['id']}")
            ax.annotate(r["label"], (d, e), fontsize=7, xytext=(3, 3), textcoords="offset points")
    depths = {d for _, d, _ in points}
    paper = sorted(
        (ref_depth, ref.value)
        for ref in CIFAR10.values()
        if (ref_depth := int(ref.model.removeprefix("resnet"))) <= max(depths) * 2
    )
    if paper and any(p[0].get("family") == "cifar" for p in points):
        line = ax.plot(
            [d for d, _ in paper],
            [e for _, e in paper],
            linestyle="--",
            marker="s",
            color="black",
            label="ResNet, He et al. 2016 (CIFAR-10)",
        )[0]
        line.set_gid("series-paper")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Test error against depth")
    _log_x_if_wide(ax, [d for _, d, _ in points])
    ax.legend(fontsize=8)
    return _save(fig, fmt)


def curves(runs: Sequence[RunData], fmt: str = "png") -> bytes:
    """Loss and accuracy per epoch: training solid, validation dashed, one colour per run."""
    drawn = [r for r in runs if r.get("epochs")]
    if not drawn:
        raise FigureDataError("none of the runs has a finished epoch")
    fig, (loss_ax, acc_ax) = _figure(ncols=2, width=10.0)
    for i, r in enumerate(drawn):
        color = f"C{i % 10}"
        epochs = r["epochs"]
        for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            for prefix, style in (("", "-"), ("val_", "--")):
                xs = [e["epoch"] for e in epochs if e.get(prefix + key) is not None]
                ys = [e.get(prefix + key) for e in epochs if e.get(prefix + key) is not None]
                if not xs:
                    continue
                which = "validation" if prefix else "training"
                # Many runs: one legend entry per run (colour); the styles say which split.
                label = f"{r['label']} ({which})" if len(drawn) <= 6 else r["label"]
                line = ax.plot(
                    xs, ys, style, color=color, marker="." if len(xs) < 30 else None,
                    label=label if len(drawn) <= 6 or not prefix else "_nolegend_",
                )[0]  # fmt: skip
                line.set_gid(f"run-{r['id']}-{prefix}{key}")
    loss_ax.set_title("Loss (solid: training, dashed: validation)")
    acc_ax.set_title("Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        _integer_x(ax)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, fmt)


def plain_vs_residual(runs: Sequence[RunData], fmt: str = "png") -> bytes:
    """Training error (%) per epoch, plain nets dashed and ResNets solid, coloured by depth.

    The paper's Figure 6 on one chart: a plain net and the ResNet of the same depth share a
    colour, so "deeper plain nets train worse, deeper ResNets better" reads off directly.
    Validation error, where recorded, is drawn thin and dotted.
    """
    drawn = [r for r in runs if r.get("epochs") and r.get("kind") in ("plain", "resnet")]
    if not drawn:
        raise FigureDataError("none of the runs is a plain net or a ResNet with finished epochs")
    depths = sorted({r.get("depth") or 0 for r in drawn})
    fig, ax = _figure(width=8.0)
    for r in drawn:
        color = f"C{depths.index(r.get('depth') or 0) % 10}"
        style = "--" if r.get("kind") == "plain" else "-"
        epochs = r["epochs"]
        train = [(e["epoch"], _num(e, "accuracy")) for e in epochs]
        xs = [x for x, a in train if a is not None]
        ys = [100.0 * (1.0 - a) for _, a in train if a is not None]
        if xs:
            line = ax.plot(xs, ys, style, color=color, label=f"{r['label']} (train)")[0]
            line.set_gid(f"run-{r['id']}-train-error")
        val = [(e["epoch"], _num(e, "val_accuracy")) for e in epochs]
        vs = [(x, 100.0 * (1.0 - v)) for x, v in val if v is not None]
        if vs:
            line = ax.plot(
                [x for x, _ in vs], [v for _, v in vs], ":", color=color, linewidth=0.8,
                label=f"{r['label']} (val)",
            )[0]  # fmt: skip
            line.set_gid(f"run-{r['id']}-val-error")
    ax.set_xlabel("epoch")
    _integer_x(ax)
    ax.set_ylabel("error (%)")
    ax.set_title("Plain (dashed) against residual (solid): training error")
    ax.legend(fontsize=7, ncols=2)
    return _save(fig, fmt)


def confusion(runs: Sequence[RunData], fmt: str = "png") -> bytes:
    """Each run's test confusion matrix (rows: true class, columns: predicted), up to 4 runs."""
    drawn = [r for r in runs if r.get("confusion_matrix")][:MAX_CONFUSION_PANELS]
    if not drawn:
        raise FigureDataError("none of the runs has a test evaluation with a confusion matrix")
    fig, axes = _figure(ncols=len(drawn), width=4.8 * len(drawn), height=4.4, squeeze=False)
    for ax, r in zip(axes[0], drawn, strict=True):
        matrix = r["confusion_matrix"] or []
        k = len(matrix)
        names = r.get("class_names") or []
        if len(names) != k:  # labels that do not fit the matrix are worse than indices
            names = [str(i) for i in range(k)]
        image = ax.imshow(matrix, cmap="Blues")
        image.set_gid(f"run-{r['id']}-confusion")
        ax.set_title(r["label"], fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 20:
            ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(k), names, fontsize=7)
            top = max((max(row) for row in matrix if row), default=0) or 1
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    ax.text(
                        j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > top / 2 else "black",
                    )  # fmt: skip
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, fmt)


def throughput(runs: Sequence[RunData], fmt: str = "png") -> bytes:
    """Mean training images/s per architecture (over its runs' epochs), with evaluation speed."""
    train: dict[str, list[float]] = {}
    evaluate: dict[str, list[float]] = {}
    for r in runs:
        speeds = [_num(e, "images_per_second") for e in r.get("epochs") or []]
        known = [s for s in speeds if s is not None]
        if known:
            train.setdefault(r["architecture"], []).append(statistics.fmean(known))
        eval_speed = _num(r, "eval_images_per_second")
        if eval_speed:
            evaluate.setdefault(r["architecture"], []).append(eval_speed)
    if not train and not evaluate:
        raise FigureDataError("none of the runs has recorded images per second")
    names = sorted({*train, *evaluate}, key=_depth_key)
    fig, ax = _figure(width=max(6.0, 1.0 + 0.9 * len(names)))
    width = 0.4 if evaluate else 0.8
    xs = list(range(len(names)))
    bars = ax.bar(
        [x - (width / 2 if evaluate else 0) for x in xs],
        [statistics.fmean(train[n]) if n in train else 0.0 for n in names],
        width,
        label="training",
    )
    for name, bar in zip(names, bars, strict=True):
        bar.set_gid(f"training-{name}")
    if evaluate:
        bars = ax.bar(
            [x + width / 2 for x in xs],
            [statistics.fmean(evaluate[n]) if n in evaluate else 0.0 for n in names],
            width,
            label="evaluation",
        )
        for name, bar in zip(names, bars, strict=True):
            bar.set_gid(f"evaluation-{name}")
    ax.set_xticks(xs, names, rotation=30, ha="right")
    ax.set_ylabel("images / s")
    ax.set_title("Throughput per architecture")
    ax.legend()
    return _save(fig, fmt)


FIGURES: dict[str, Callable[[Sequence[RunData], str], bytes]] = {
    "training_time_vs_depth": training_time_vs_depth,
    "error_vs_depth": error_vs_depth,
    "curves": curves,
    "plain_vs_residual": plain_vs_residual,
    "confusion": confusion,
    "throughput": throughput,
}


# --- helpers ---------------------------------------------------------------------------------


def _figure(
    *, ncols: int = 1, width: float = 7.0, height: float = 4.5, squeeze: bool = True
) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=squeeze)
    if squeeze and ncols == 1:
        axes.grid(True, alpha=0.3)
    return fig, axes


def _save(fig: Figure, fmt: str) -> bytes:
    import matplotlib

    out = io.BytesIO()
    rc: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "resnet-service"}
    with _SAVE_LOCK, matplotlib.rc_context(rc):  # type: ignore[arg-type]
        if fmt == "svg":
            fig.savefig(out, format="svg", metadata={"Date": None})
        else:
            fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _num(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _test_accuracy(r: RunData) -> float | None:
    metrics = r.get("metrics") or {}
    value = metrics.get("accuracy", metrics.get("subset_accuracy"))
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _by(items: Sequence[Any], key: Callable[[Any], str]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return dict(sorted(groups.items()))


def _mean_by_x(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(x, []).append(y)
    xs = sorted(by_x)
    return xs, [statistics.fmean(by_x[x]) for x in xs]


def _log_x_if_wide(ax: Axes, xs: Sequence[float]) -> None:
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")


def _integer_x(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _depth_key(name: str) -> tuple[str, int]:
    digits = "".join(c if c.isdigit() else " " for c in name).split()
    return (name.rstrip("0123456789_"), int(digits[0]) if digits else 0)
