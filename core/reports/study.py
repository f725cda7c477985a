"""The seed study's rows as a reference, and the checks that flag where they are inconsistent.

The study (its text is the service's seed) prints its results as fractions on one machine, and
they do not agree with themselves: in its Table 1 accuracy and error never add up to 1, and its
ResNet-110 is better than He et al. 2016's. A :class:`StudyResult` keeps a row exactly as printed
— a reproducer compares with what the study *says*, not with a repaired version of it — and
:func:`study_flags` says what is wrong with it. The numbers themselves live in
:mod:`core.reports.references`, with the original paper's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # references imports this module for the types
    from core.reports.references import Reference, Task

StudyMetric = Literal["accuracy", "precision", "recall", "f1", "error", "baseline_error"]
STUDY_METRICS: tuple[StudyMetric, ...] = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "error",
    "baseline_error",
)

_TITLES = {m: m.replace("_", " ") for m in STUDY_METRICS} | {"f1": "F1"}


@dataclass(frozen=True)
class StudyFlag:
    """One way a row of the study contradicts itself or the original paper.

    Attributes:
        code: Stable, for programs: ``accuracy_plus_error``, ``above_he_2016``,
            ``baseline_not_he_2016``, ``f1_above_precision_and_recall``, ``tables_disagree``.
        label: A few words for a table cell.
        text: What is wrong, with the numbers.
    """

    code: str
    label: str
    text: str


@dataclass(frozen=True)
class StudyResult:
    """One row of one of the study's tables, every cell as printed (``".0923"``; ``None`` for
    ``-`` or an empty cell), with what is inconsistent in it.

    Attributes:
        table: 1, 2 or 3.
        row: The row's name as the study prints it (``ResNet110``, ``ImageNet``, ``Baseline``).
        model: The architecture as this service spells it; ``None`` when the study names none.
        task: The data it was measured on.
        source: Citation, with the table.
        hardware: The machine the study ran on (its training times are that machine's).
        training_time: As printed (``2 Days 21 Hours 12 Minutes``).
        note: Anything a reader needs that the study does not say.
        flags: What :func:`study_flags` found.
    """

    table: int
    row: str
    model: str | None
    task: Task
    source: str
    hardware: str
    accuracy: str | None = None
    precision: str | None = None
    recall: str | None = None
    f1: str | None = None
    error: str | None = None
    baseline_error: str | None = None
    training_time: str | None = None
    note: str | None = None
    flags: tuple[StudyFlag, ...] = ()

    def value(self, metric: StudyMetric) -> float | None:
        """The printed number as a fraction (``0.0923``)."""
        text: str | None = getattr(self, metric)
        return None if text is None else float(text)

    def percent(self, metric: StudyMetric) -> float | None:
        """The printed fraction in percent, exactly (``".0923"`` → ``9.23``): a change of unit,
        not of value."""
        text: str | None = getattr(self, metric)
        return None if text is None else float(Decimal(text) * 100)

    @property
    def training_seconds(self) -> float | None:
        """The printed training time in seconds."""
        return None if self.training_time is None else duration_seconds(self.training_time)

    @property
    def flags_label(self) -> str:
        """The flags' labels for a table cell; ``"none"`` when there are none."""
        return "; ".join(f.label for f in self.flags) or "none"

    def printed(self) -> dict[str, str]:
        """The row's cells as printed, by field name (cells the study left empty omitted)."""
        names = (*STUDY_METRICS, "training_time")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def to_json(self) -> dict[str, Any]:
        """The row as printed and as numbers (fractions, seconds), with its flags."""
        return {
            "source": self.source,
            "table": self.table,
            "row": self.row,
            "model": self.model,
            "task": self.task,
            "printed": self.printed(),
            **{m: self.value(m) for m in STUDY_METRICS},
            "training_time": self.training_time,
            "training_seconds": self.training_seconds,
            "hardware": self.hardware,
            "note": self.note,
            "flags": [{"code": f.code, "label": f.label, "text": f.text} for f in self.flags],
        }


_DURATION_UNITS = {"day": 86400, "hour": 3600, "minute": 60, "second": 1, "s": 1}


def duration_seconds(text: str) -> float:
    """``"22 Hours 59 Minutes 41 s"`` → ``82781.0``.

    Raises:
        ValueError: a part that is not ``<number> <days|hours|minutes|seconds|s>``.
    """
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"Unknown duration: {text!r}. Expected e.g. '2 Days 21 Hours 12 Minutes'")
    total = 0.0
    for number, unit in parts:
        name = unit.lower()
        name = name if name in _DURATION_UNITS else name.removesuffix("s")
        if name not in _DURATION_UNITS:
            raise ValueError(f"Unknown duration unit: {unit!r} in {text!r}")
        total += float(number) * _DURATION_UNITS[name]
    return total


def study_flags(
    result: StudyResult, *, original: Reference | None, others: Sequence[StudyResult] = ()
) -> tuple[StudyFlag, ...]:
    """What is inconsistent in one row of the study, allowing for its printed rounding.

    Args:
        result: The row.
        original: He et al. 2016's error for the same net and data, if the paper has one.
        others: The rest of the study, to compare the same net on the same data across tables.

    Returns:
        In this order, those that apply:

        - ``accuracy_plus_error``: accuracy and error do not add up to 1;
        - ``above_he_2016``: better than the original paper's result — accuracy above 100 − its
          error, or error below it;
        - ``baseline_not_he_2016``: the "Error (Baseline)" cell is not the paper's error
          rounded to the printed digits;
        - ``f1_above_precision_and_recall``: an F1 above both precision and recall, which an
          F1 (or an average of per-class F1s) cannot be;
        - ``tables_disagree``: another table gives other numbers for the same net and data.
    """
    flags = [
        *_sum_flag(result),
        *_original_flags(result, original),
        *_f1_flag(result),
        *(flag for other in others for flag in _disagreement(result, other)),
    ]
    return tuple(flags)


def _half_unit(text: str) -> Decimal:
    """Half a unit in the last printed digit: how far a correctly rounded number can be off."""
    exponent = Decimal(text).as_tuple().exponent
    assert isinstance(exponent, int)  # a finite number
    return Decimal(1).scaleb(exponent) / 2


def _sum_flag(result: StudyResult) -> list[StudyFlag]:
    accuracy, error = result.accuracy, result.error
    if accuracy is None or error is None:
        return []
    total = Decimal(accuracy) + Decimal(error)
    if abs(total - 1) <= _half_unit(accuracy) + _half_unit(error):
        return []
    return [
        StudyFlag(
            "accuracy_plus_error",
            "accuracy + error ≠ 1",
            f"accuracy {accuracy} + error {error} = {total}, not 1",
        )
    ]


def _original_flags(result: StudyResult, original: Reference | None) -> list[StudyFlag]:
    if original is None:
        return []
    flags = []
    accuracy, error = result.percent("accuracy"), result.percent("error")
    better = []
    if accuracy is not None and accuracy > 100 - original.value:
        better.append(f"accuracy {accuracy:.2f}% is above their {100 - original.value:.2f}%")
    if error is not None and error < original.value:
        better.append(f"error {error:.2f}% is below their {original.value:.2f}%")
    if better:
        table = original.source.rpartition(", ")[2]
        flags.append(
            StudyFlag(
                "above_he_2016",
                "above He et al. 2016",
                f"better than He et al. 2016 for the same net: {' and '.join(better)} "
                f"({table}, {original.metric}: {original.display()})",
            )
        )
    baseline = result.baseline_error
    if baseline is not None:
        paper = Decimal(str(original.value)) / 100
        if abs(Decimal(baseline) - paper) > _half_unit(baseline):
            flags.append(
                StudyFlag(
                    "baseline_not_he_2016",
                    "baseline ≠ He et al. 2016",
                    f"its baseline error {baseline} is not He et al. 2016's "
                    f"{original.value:.2f}% rounded",
                )
            )
    return flags


def _f1_flag(result: StudyResult) -> list[StudyFlag]:
    f1, precision, recall = result.f1, result.precision, result.recall
    if f1 is None or precision is None or recall is None:
        return []
    if Decimal(f1) <= max(Decimal(precision), Decimal(recall)):
        return []
    return [
        StudyFlag(
            "f1_above_precision_and_recall",
            "F1 > precision, recall",
            f"F1 {f1} is above both precision {precision} and recall {recall}",
        )
    ]


def _disagreement(result: StudyResult, other: StudyResult) -> list[StudyFlag]:
    """A flag when ``other``, in another table, gives other numbers for the same net and data."""
    if other.table == result.table or result.model is None:
        return []
    if (other.model, other.task) != (result.model, result.task):
        return []
    shared = [m for m in STUDY_METRICS if getattr(result, m) and getattr(other, m)]
    if all(Decimal(getattr(result, m)) == Decimal(getattr(other, m)) for m in shared):
        return []
    theirs = ", ".join(f"{_TITLES[m]} {getattr(other, m)}" for m in shared)
    ours = ", ".join(f"{_TITLES[m]} {getattr(result, m)}" for m in shared)
    return [
        StudyFlag(
            "tables_disagree",
            f"≠ its Table {other.table}",
            f"its Table {other.table} gives the same net on the same data {theirs}; "
            f"this row {ours}",
        )
    ]
