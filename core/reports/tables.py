"""The study's tables from recorded runs, as JSON, CSV or Markdown.

- :func:`table1`: the seed study's Table 1 — model, accuracy, precision, recall, F1, error, the
  paper's error, training time — for any set of runs (one row per run), or aggregated over
  seeds (mean ± std per architecture and recipe).
- :func:`large_dataset_table`: its Table 3 layout for ImageNet- and COCO-sized runs —
  accuracy, precision, recall, F1 (and mAP for multi-label runs), training time — beside the
  published reference (ImageNet: the paper's 10-crop error; COCO: ML-GCN's ResNet-101 mAP,
  since the paper's own COCO result is object detection).

Both put the seed study's own numbers for the same net beside ours and He et al.'s (``study_*``
columns: its Table 1, or its Table 3 with its training times on its RTX 4060), as it printed
them, with what is inconsistent in each of its rows (``study_flags``).

Percentages are in percent (``91.25``), times in seconds; ``None`` is a number not recorded.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from core.reports.references import (
    COCO_NOTE,
    IMAGENET_TOP5,
    STUDY,
    STUDY_GPU,
    STUDY_HARDWARE,
    Reference,
    paper_error,
    reference_for,
    study_result,
    task_of,
)
from core.reports.runs import RunData, recipe
from core.reports.study import StudyResult

Format = Literal["json", "csv", "md"]
FORMATS: tuple[str, ...] = ("json", "csv", "md")


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    unit: str | None = None  # "%", "s"; Markdown formats by it
    aggregate: bool = False  # a number averaged over seeds in aggregated tables


@dataclass
class Table:
    """A report table: columns, rows of plain values, and the notes a reader needs."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    study: list[StudyResult] = field(default_factory=list)  # the seed study's rows shown

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [{"key": c.key, "title": c.title, "unit": c.unit} for c in self.columns],
            "rows": self.rows,
            "notes": self.notes,
            # The tables have always shown references without their parameter counts.
            "references": [
                {k: v for k, v in r.to_json().items() if k != "params_millions"}
                for r in self.references
            ],
            "study": [s.to_json() for s in self.study],
        }

    def to_csv(self) -> str:
        """One header line of column keys (with ``_std`` columns when aggregated), then rows."""
        keys = self._csv_keys()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(keys)
        for row in self.rows:
            writer.writerow(["" if row.get(k) is None else _csv_value(row.get(k)) for k in keys])
        return out.getvalue()

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with the title above and numbered notes below."""
        lines = [f"### {self.title}", ""]
        titles = [c.title + (f" ({c.unit})" if c.unit else "") for c in self.columns]
        lines.append("| " + " | ".join(_md_escape(t) for t in titles) + " |")
        lines.append("|" + "|".join("---:" if c.unit else ":---" for c in self.columns) + "|")
        for row in self.rows:
            cells = [_md_escape(_md_cell(row, c)) for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        if not self.rows:
            lines.append("| " + " | ".join("" for _ in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"{i}. {note}" for i, note in enumerate(self.notes, 1))
        return "\n".join(lines) + "\n"

    def render(self, fmt: Format | str) -> str | dict[str, Any]:
        if fmt == "json":
            return self.to_json()
        if fmt == "csv":
            return self.to_csv()
        if fmt == "md":
            return self.to_markdown()
        raise ValueError(f"Unknown format: {fmt!r}. Expected one of {', '.join(FORMATS)}")

    def _csv_keys(self) -> list[str]:
        keys: list[str] = []
        present = {k for row in self.rows for k in row}
        for c in self.columns:
            keys.append(c.key)
            if c.aggregate and f"{c.key}_std" in present:
                keys.append(f"{c.key}_std")
        extra = [k for k in ("n", "run_ids") if k in present and k not in keys]
        return keys + extra


# --- metrics ---------------------------------------------------------------------------------


def headline(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Accuracy, precision, recall, F1 (macro; in %) from core's metrics, either kind.

    Single-label: ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``top5``.
    Multi-label: ``subset_accuracy``, ``CP``, ``CR``, ``CF1`` and ``mAP``.
    """

    def pct(*keys: str) -> float | None:
        for k in keys:
            v = metrics.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                return 100.0 * float(v)
        return None

    accuracy = pct("accuracy", "subset_accuracy")
    return {
        "accuracy": accuracy,
        "precision": pct("precision_macro", "CP"),
        "recall": pct("recall_macro", "CR"),
        "f1": pct("f1_macro", "CF1"),
        "error": None if accuracy is None else 100.0 - accuracy,
        "top5_accuracy": pct("top5_accuracy"),
        "mAP": pct("mAP"),
    }


# The seed study's scores beside ours, and what is inconsistent in its row.
_STUDY_SCORE_COLUMNS = (
    Column("study_accuracy", "Study's accuracy", "%"),
    Column("study_precision", "Study's precision", "%"),
    Column("study_recall", "Study's recall", "%"),
    Column("study_f1", "Study's F1", "%"),
)
_STUDY_FLAGS = Column("study_flags", "Study's flags")

# --- Table 1 ---------------------------------------------------------------------------------

# The scores both tables give a run, in this order.
_SCORE_COLUMNS = (
    Column("accuracy", "Accuracy", "%", aggregate=True),
    Column("precision", "Precision", "%", aggregate=True),
    Column("recall", "Recall", "%", aggregate=True),
    Column("f1", "F1", "%", aggregate=True),
)

TABLE1_COLUMNS = [
    Column("model", "Model"),
    Column("run_id", "Run"),
    *_SCORE_COLUMNS,
    Column("error", "Error", "%", aggregate=True),
    Column("paper_error", "Paper's error", "%"),
    Column("training_time", "Training time", "s", aggregate=True),
    # the seed study's, after ours and the paper's (its Table 1, as printed, in %)
    *_STUDY_SCORE_COLUMNS,
    Column("study_error", "Study's error", "%"),
    _STUDY_FLAGS,
]


def table1(runs: Sequence[RunData], *, aggregate: bool = False) -> Table:
    """The seed study's Table 1 for ``runs``: one row per run, in the order given.

    Args:
        runs: The runs (:class:`RunData`).
        aggregate: One row per architecture and recipe instead, each number the mean over
            the runs that have it (seeds), with ``<key>_std`` its sample standard deviation
            and ``n`` how many runs were averaged.

    The paper's error is He et al. 2016's CIFAR-10 test error (Table 6) for the CIFAR nets and
    its ImageNet top-1 10-crop error (Table 3) for the ImageNet ones, whatever the run trained
    on: a note says so when a run's data is not the paper's. The ``study_*`` columns are the
    seed study's Table 1 row for the same net (CIFAR-10), as printed, with its flags.
    """
    rows: list[dict[str, Any]] = []
    refs: dict[str, Reference] = {}
    studied: dict[str, StudyResult] = {}
    other_data = False
    for r in runs:
        numbers = headline(r.get("metrics") or {})
        ref = paper_error(r["architecture"])
        study = study_result(r["architecture"], r.get("dataset") or "", table=1)
        if study is not None:
            studied[study.row] = study
        if ref is not None:
            refs[ref.model] = ref
            expected = "cifar10" if ref.task == "cifar10" else "imagenet"
            other_data |= task_of(r.get("dataset") or "") != expected
        rows.append(
            {
                "model": r["architecture"],
                "run_id": r["id"],
                "label": r.get("label", r["architecture"]),
                "dataset": r.get("dataset"),
                "status": r.get("status"),
                "seed": r.get("seed"),
                "accuracy": numbers["accuracy"],
                "precision": numbers["precision"],
                "recall": numbers["recall"],
                "f1": numbers["f1"],
                "error": numbers["error"],
                "paper_error": ref.value if ref else None,
                "paper_error_text": ref.display() if ref else None,
                "training_time": r.get("train_seconds"),
                **_study_cells(study, table=1),
            }
        )
    notes = _paper_notes(refs.values(), other_data)
    notes += _study_notes(list(studied.values()), "its Table 1 (CIFAR-10)")
    table = Table(
        "Table 1: classification metrics beside the paper's error and the seed study's",
        list(TABLE1_COLUMNS),
        rows,
        notes,
        sorted(refs.values(), key=lambda x: (x.task, x.model)),
        sorted(studied.values(), key=_study_order),
    )
    if aggregate:
        table = _aggregated(table, runs)
    return table


def _paper_notes(refs: Any, other_data: bool) -> list[str]:
    refs = list(refs)
    notes = []
    if any(r.task == "cifar10" for r in refs):
        notes.append(
            "Paper's error for the CIFAR nets: CIFAR-10 test error, He et al. 2016, Table 6 "
            "(ResNet-110: best of 5 runs, 6.43; mean 6.61 ± 0.16)."
        )
    if any(r.task == "imagenet" for r in refs):
        notes.append(
            "Paper's error for the ImageNet nets: top-1 validation error, 10-crop testing, "
            "He et al. 2016, Table 3."
        )
    if other_data:
        notes.append(
            "Some runs trained on other data than the paper's: their paper's error is the "
            "published number for the architecture, not a target for that data."
        )
    notes.append("Accuracy, precision, recall and F1 are macro averages on the test split, in %.")
    return notes


def _study_cells(study: StudyResult | None, *, table: int) -> dict[str, Any]:
    """A row's ``study_*`` values: the study's numbers in % (and, in Table 3, its training time
    in seconds with the text it printed), its flags' codes and, for a cell, their labels."""
    cells: dict[str, Any] = {
        f"study_{m}": study.percent(m) if study else None
        for m in ("accuracy", "precision", "recall", "f1")
    }
    if table == 1:
        cells["study_error"] = study.percent("error") if study else None
    else:
        cells["study_training_time"] = study.training_seconds if study else None
        cells["study_training_time_text"] = study.training_time if study else None
    cells["study_flags"] = [f.code for f in study.flags] if study else None
    cells["study_flags_text"] = study.flags_label if study else None
    return cells


def _study_notes(shown: Sequence[StudyResult], which: str) -> list[str]:
    """What the ``study_*`` columns are, and each shown row's inconsistencies in full."""
    if not shown:
        return []
    notes = [
        f"Study's columns: the seed study's own results, {which}, as it printed them "
        f"(fractions, here in %), never corrected; measured on {STUDY_HARDWARE}. The published "
        "references stay the primary ones; its flags say where its numbers contradict "
        "themselves or the original paper."
    ]
    for study in sorted(shown, key=_study_order):
        if study.flags:
            texts = "; ".join(f.text for f in study.flags)
            notes.append(f"Study's {study.row} (its Table {study.table}): {texts}.")
    return notes


def _study_order(study: StudyResult) -> int:
    """The study's own row order (ResNet20 … ResNet1202, then its Tables 2 and 3)."""
    return STUDY.index(study)


def _aggregated(table: Table, runs: Sequence[RunData]) -> Table:
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        config = recipe(r.get("config") or {})
        key = repr((r["architecture"], r.get("dataset"), sorted(config.items(), key=str)))
        groups.setdefault(key, []).append(i)
    rows = []
    for members in groups.values():
        first = table.rows[members[0]]
        row: dict[str, Any] = {
            "model": first["model"],
            "run_id": None,
            "run_ids": [table.rows[i]["run_id"] for i in members],
            "dataset": first["dataset"],
            "n": len(members),
            # the published numbers are the architecture's, the same for every member
            **{k: v for k, v in first.items() if k.startswith(("paper_error", "study_"))},
        }
        for column in table.columns:
            if column.aggregate:
                values = [table.rows[i][column.key] for i in members]
                row[column.key], row[f"{column.key}_std"] = mean_std(values)
        rows.append(row)
    columns = [c for c in table.columns if c.key != "run_id"]
    columns.insert(1, Column("n", "Runs"))
    notes = [*table.notes, "Each number is the mean ± sample standard deviation over seeds."]
    return Table(
        table.title + " (mean ± std over seeds)",
        columns,
        rows,
        notes,
        table.references,
        table.study,
    )


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are numbers (std 0 for one)."""
    numbers = [float(v) for v in values if v is not None]
    if not numbers:
        return None, None
    if len(numbers) == 1:
        return numbers[0], 0.0
    return statistics.fmean(numbers), statistics.stdev(numbers)


# --- Table 3 ---------------------------------------------------------------------------------

LARGE_COLUMNS = [
    Column("model", "Model"),
    Column("dataset", "Dataset"),
    Column("run_id", "Run"),
    *_SCORE_COLUMNS,
    Column("mAP", "mAP", "%", aggregate=True),
    Column("training_time", "Training time", "s", aggregate=True),
    Column("reference", "Published reference"),
    # the seed study's Table 3 row for the same net and data, its training time on its machine
    *_STUDY_SCORE_COLUMNS,
    Column("study_training_time", f"Study's training time, {STUDY_GPU}", "s"),
    _STUDY_FLAGS,
]


def large_dataset_table(runs: Sequence[RunData]) -> Table:
    """The seed study's Table 3 layout: accuracy, precision, recall, F1, training time.

    Multi-label runs (COCO) report subset accuracy and the per-class averages CP, CR, CF1, and
    their mAP. The reference column gives the published number for the same model and task:
    ImageNet top-1/top-5 error (He et al. 2016, Table 3, 10-crop), or for COCO ML-GCN's
    ResNet-101 baseline, 77.3 mAP; the paper's COCO result is detection and is not used. The
    ``study_*`` columns are the seed study's Table 3 row for the same net and data, as printed,
    with its training time on its one RTX 4060.
    """
    rows = []
    refs: dict[tuple[str, str], Reference] = {}
    studied: dict[str, StudyResult] = {}
    coco = False
    for r in runs:
        numbers = headline(r.get("metrics") or {})
        dataset = r.get("dataset") or ""
        study = study_result(r["architecture"], dataset, table=3)
        if study is not None:
            studied[study.row] = study
        ref = reference_for(r["architecture"], dataset)
        task = task_of(dataset)
        coco |= task == "coco"
        text = None
        if ref is not None:
            refs[(ref.task, ref.model)] = ref
            text = f"{ref.metric} {ref.display()}"
            if ref.task == "imagenet" and ref.model in IMAGENET_TOP5:
                top5 = IMAGENET_TOP5[ref.model]
                refs[("imagenet-top5", ref.model)] = top5
                text = f"top-1/top-5 error (%) {ref.value:.2f}/{top5.value:.2f}"
        rows.append(
            {
                "model": r["architecture"],
                "dataset": dataset,
                "run_id": r["id"],
                "label": r.get("label", r["architecture"]),
                "status": r.get("status"),
                "accuracy": numbers["accuracy"],
                "precision": numbers["precision"],
                "recall": numbers["recall"],
                "f1": numbers["f1"],
                "mAP": numbers["mAP"],
                "top5_accuracy": numbers["top5_accuracy"],
                "training_time": r.get("train_seconds"),
                "reference": text,
                "reference_value": ref.value if ref else None,
                "reference_source": ref.source if ref else None,
                **_study_cells(study, table=3),
            }
        )
    notes = [
        "Accuracy, precision, recall and F1 are macro averages on the test split (multi-label "
        "runs: subset accuracy and the per-class averages CP, CR, CF1), in %.",
        "ImageNet references: He et al. 2016, Table 3 (10-crop testing, single model).",
    ]
    if coco:
        notes.append(COCO_NOTE)
    notes += _study_notes(list(studied.values()), "its Table 3 (ResNet-101; training time)")
    return Table(
        "Table 3: large datasets — metrics and training time",
        list(LARGE_COLUMNS),
        rows,
        notes,
        sorted(refs.values(), key=lambda x: (x.task, x.model, x.metric)),
        sorted(studied.values(), key=_study_order),
    )


# --- formatting ------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``3725.0`` → ``"1:02:05"``; under a minute, ``"42.0 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _md_cell(row: Mapping[str, Any], column: Column) -> str:
    value = row.get(column.key)
    if row.get(f"{column.key}_text"):  # as published: "6.43 (best of 5; …)", "2 Days 21 Hours"
        return str(row[f"{column.key}_text"])
    if column.key == "run_id":
        return str(value)[:8] if value else ""
    if value is None:
        return "—"
    if column.unit == "s":
        text = format_seconds(float(value))
        std = row.get(f"{column.key}_std")
        return text + (f" ± {format_seconds(float(std))}" if std else "")
    if isinstance(value, float):
        std = row.get(f"{column.key}_std")
        return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None and "n" in row else "")
    return str(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _csv_value(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
