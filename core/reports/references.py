"""Published numbers that reports put beside recorded runs, each with where it comes from.

Sources:

- **He et al. 2016** — K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
  Recognition", CVPR 2016 (arXiv:1512.03385).
  - Table 6: CIFAR-10 test error (%) and parameter counts of ResNet-20 … ResNet-1202 (option A
    shortcuts, 45k/5k split, 64k iterations). ResNet-110 is reported as the best of 5 runs,
    6.43, with mean ± std 6.61 ± 0.16 in brackets.
  - Table 3: ImageNet validation error (%), 10-crop testing, single models: top-1/top-5 of
    ResNet-34 (option B), 50, 101 and 152.
  - Table 1: FLOPs (multiply-adds) of the ImageNet nets.
  - Table 8 (appendix): COCO *object detection* with Faster R-CNN (mAP@.5 and mAP@[.5, .95]).
    That is detection, not classification: no classification target is taken from it.
- **Chen et al. 2019** — Z.-M. Chen, X.-S. Wei, P. Wang, Y. Guo, "Multi-Label Image Recognition
  with Graph Convolutional Networks" (ML-GCN), CVPR 2019, Table 1: the plain ResNet-101 baseline
  for MS-COCO 2014 multi-label classification at 448 × 448 input reaches 77.3 mAP (%).

- **The seed study** — M. H. Rafi, Z. Rahimi Pirkoochi, "Exploring Deep Residual Learning for
  Image Recognition", Auburn University, July 2024 (the study this service is built around), its
  Tables 1–3 and training times on one RTX 4060 (:data:`STUDY`). A second reference, after He et
  al.: its numbers are kept as it printed them, never corrected, and each row carries the
  inconsistencies found in it (:class:`StudyFlag`) — in its Table 1 accuracy and error never add
  up to 1, and its ResNet-110 accuracy, 95.64%, is above what He et al. report (93.57%).

This module is the one home of these numbers: the architecture catalogue
(:func:`core.catalogue.static_entry`, ``GET /v1/architectures``, ``resnet archs``), the report
tables and the figures all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from core.reports.study import STUDY_METRICS, StudyResult, study_flags

HE_2016 = (
    "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 "
    "(arXiv:1512.03385)"
)
CHEN_2019 = (
    "Chen, Wei, Wang, Guo. Multi-Label Image Recognition with Graph Convolutional Networks "
    "(ML-GCN). CVPR 2019"
)

Task = Literal["cifar10", "imagenet", "coco"]


@dataclass(frozen=True)
class Reference:
    """One published number for one model.

    Attributes:
        model: The architecture name as this service spells it (``resnet110``).
        task: ``cifar10``, ``imagenet`` or ``coco``.
        metric: What the number measures, e.g. ``"test error (%)"``.
        value: The headline value, in percent.
        source: Citation, with the table.
        mean: The mean over repeated runs, when the source gives one.
        std: Its standard deviation.
        runs: Over how many runs ``mean`` and ``std`` were taken.
        params_millions: Parameter count as the source prints it (millions).
        note: Anything a reader needs to compare fairly.
        comparable: ``False`` for a number kept for context only (another task).
    """

    model: str
    task: Task
    metric: str
    value: float
    source: str
    mean: float | None = None
    std: float | None = None
    runs: int | None = None
    params_millions: float | None = None
    note: str | None = None
    comparable: bool = True

    def display(self) -> str:
        """``"6.43 (best of 5; mean 6.61 ± 0.16)"``, or just the value."""
        if self.mean is not None and self.std is not None:
            return f"{self.value:.2f} (best of {self.runs}; mean {self.mean:.2f} ± {self.std:.2f})"
        return f"{self.value:.2f}"

    def to_json(self) -> dict[str, Any]:
        """Every field, as the API and the tables' JSON show a reference."""
        return {
            "model": self.model,
            "task": self.task,
            "metric": self.metric,
            "value": self.value,
            "mean": self.mean,
            "std": self.std,
            "runs": self.runs,
            "params_millions": self.params_millions,
            "source": self.source,
            "note": self.note,
            "comparable": self.comparable,
        }


_T6 = f"{HE_2016}, Table 6"
_T3 = f"{HE_2016}, Table 3 (10-crop testing)"

#: He et al. 2016, Table 6: CIFAR-10 test error (%) and parameters.
CIFAR10: dict[str, Reference] = {
    r.model: r
    for r in (
        Reference("resnet20", "cifar10", "test error (%)", 8.75, _T6, params_millions=0.27),
        Reference("resnet32", "cifar10", "test error (%)", 7.51, _T6, params_millions=0.46),
        Reference("resnet44", "cifar10", "test error (%)", 7.17, _T6, params_millions=0.66),
        Reference("resnet56", "cifar10", "test error (%)", 6.97, _T6, params_millions=0.85),
        Reference(
            "resnet110",
            "cifar10",
            "test error (%)",
            6.43,
            _T6,
            mean=6.61,
            std=0.16,
            runs=5,
            params_millions=1.7,
            note="best of 5 runs; the table gives mean ± std in brackets",
        ),
        Reference(
            "resnet1202",
            "cifar10",
            "test error (%)",
            7.93,
            _T6,
            params_millions=19.4,
            note="worse than ResNet-110, which the paper attributes to overfitting",
        ),
    )
}

#: He et al. 2016, Table 3: ImageNet validation top-1 / top-5 error (%), 10-crop, single model.
IMAGENET_TOP1: dict[str, Reference] = {}
IMAGENET_TOP5: dict[str, Reference] = {}
# (top-1, top-5, GFLOPs from Table 1)
_IMAGENET = {
    "resnet34": (24.52, 7.46, 3.6, "option B shortcuts (projections when dimensions grow)"),
    "resnet50": (22.85, 6.71, 3.8, None),
    "resnet101": (21.75, 6.05, 7.6, None),
    "resnet152": (21.43, 5.71, 11.3, None),
}
IMAGENET_GFLOPS: dict[str, float] = {}
for _name, (_top1, _top5, _gflops, _note) in _IMAGENET.items():
    IMAGENET_TOP1[_name] = Reference(_name, "imagenet", "top-1 error (%)", _top1, _T3, note=_note)
    IMAGENET_TOP5[_name] = Reference(_name, "imagenet", "top-5 error (%)", _top5, _T3, note=_note)
    IMAGENET_GFLOPS[_name] = _gflops

#: COCO: the multi-label classification baseline a ResNet-101 classifier is compared with.
COCO_MULTILABEL: dict[str, Reference] = {
    "resnet101": Reference(
        "resnet101",
        "coco",
        "mAP (%)",
        77.3,
        f"{CHEN_2019}, Table 1 (ResNet-101 baseline)",
        note="MS-COCO 2014 multi-label classification, 448 x 448 input",
    )
}

#: The paper's own COCO result, kept for context: it is object detection, not classification.
COCO_DETECTION_CONTEXT = Reference(
    "resnet101",
    "coco",
    "detection mAP@[.5, .95] (%)",
    27.2,
    f"{HE_2016}, Table 8 (Faster R-CNN)",
    note="object detection (mAP@.5 48.4), not multi-label classification: not a target "
    "for a classifier",
    comparable=False,
)

COCO_NOTE = (
    "He et al. 2016 report object detection on COCO (Faster R-CNN, Table 8), not "
    "classification, so the paper gives no target for a multi-label classifier. The reference "
    "is Chen et al. 2019 (ML-GCN), whose plain ResNet-101 baseline reaches 77.3 mAP at 448 px."
)


def task_of(dataset: str) -> Task | None:
    """Which published task a run's data source corresponds to, if any.

    ``cifar10``/``cifar10:…`` → ``cifar10``; ``imagenet:…`` → ``imagenet``; ``coco:…`` →
    ``coco``. Anything else (a folder, synthetic data) has no published counterpart, though a
    registered dataset whose location names CIFAR-10 counts as CIFAR-10.
    """
    kind, _, location = dataset.partition(":")
    kind = kind.strip().lower()
    if kind in ("cifar10", "imagenet", "coco"):
        return kind  # type: ignore[return-value]
    squashed = location.lower().replace("-", "").replace("_", "")
    if "cifar10" in squashed and "cifar100" not in squashed:
        return "cifar10"
    return None


def paper_error(model: str) -> Reference | None:
    """The paper's error for a model: CIFAR-10 test error, else ImageNet top-1 (10-crop)."""
    key = model.strip().lower().replace("-", "")
    return CIFAR10.get(key) or IMAGENET_TOP1.get(key)


def reference_for(model: str, dataset: str) -> Reference | None:
    """The published number a run of ``model`` on ``dataset`` is compared with.

    CIFAR-10 and ImageNet: the paper's error. COCO: ML-GCN's ResNet-101 mAP (never the paper's
    detection result). Other data: ``None``.
    """
    key = model.strip().lower().replace("-", "")
    task = task_of(dataset)
    if task == "cifar10":
        return CIFAR10.get(key)
    if task == "imagenet":
        return IMAGENET_TOP1.get(key)
    if task == "coco":
        return COCO_MULTILABEL.get(key)
    return None


def all_references() -> list[Reference]:
    """Every reference, for ``GET /v1/reports/references`` and the bundle."""
    return [
        *CIFAR10.values(),
        *IMAGENET_TOP1.values(),
        *IMAGENET_TOP5.values(),
        *COCO_MULTILABEL.values(),
        COCO_DETECTION_CONTEXT,
    ]


# --- the seed study: a second reference, as reported and flagged ------------------------------

SEED_STUDY = (
    "Rafi, Rahimi Pirkoochi. Exploring Deep Residual Learning for Image Recognition. Auburn "
    "University, July 2024 (study deck)"
)
#: Where the study trained, as it prints it (its "Environment"); its training times are this
#: machine's.
STUDY_HARDWARE = (
    "one NVIDIA GeForce RTX 4060 16 GB; 13th Gen Intel(R) Core(TM) i9-13900HX; 32 GB DDR5 RAM; "
    "TensorFlow, Keras, Python"
)
STUDY_GPU = "one RTX 4060"


def _row(
    table: int, row: str, task: Task, *cells: str | None, model: str | None, **more: Any
) -> StudyResult:
    """A row of the study's ``table``; ``cells`` in its column order (accuracy, precision,
    recall, F1, error, baseline error; fewer where its table has fewer)."""
    named: dict[str, Any] = dict(zip(STUDY_METRICS, cells, strict=False))
    source = f"{SEED_STUDY}, Table {table}"
    return StudyResult(
        table, row, model, task, source=source, hardware=STUDY_HARDWARE, **named, **more
    )


def _cifar(row: str, *cells: str) -> StudyResult:
    """A row of its Table 1: the net is the row's name (``ResNet110`` → ``resnet110``)."""
    return _row(1, row, "cifar10", *cells, model=row.lower())


# Cells exactly as the study prints them (fractions, some with a leading 0 and some without).
# fmt: off
_AS_PRINTED = (
    # Table 1: Classification Metrics on CIFAR-10
    #       Model         Accuracy  Precision Recall    F1-score  Error    Error (Baseline)
    _cifar("ResNet20",   "0.8478", "0.8469", "0.8455", "0.8468", ".0923", ".0875"),
    _cifar("ResNet32",   "0.8264", "0.8325", "0.8216", "0.8333", ".0856", ".0751"),
    _cifar("ResNet44",   "0.8945", "0.8835", "0.8745", "0.8862", ".0802", ".0717"),
    _cifar("ResNet56",   "0.9154", "0.9365", "0.9147", "0.9111", ".0736", ".069"),
    _cifar("ResNet110",  "0.9564", "0.9456", "0.9684", "0.9231", ".0691", ".064"),
    _cifar("ResNet1202", "0.8647", "0.8543", "0.8442", "0.8365", ".0895", ".079"),
    # Table 2: Classification Metrics on MS COCO (Accuracy (%), Precision, Recall, F1-score)
    _row(2, "ResNet101", "coco", ".7123", ".7245", ".7136", ".8131", model="resnet101"),
    _row(2, "Baseline", "coco", None, ".7640", model=None,
         note="the study names neither the model nor the source of this baseline"),
    # Table 3: Classification Metrics of ResNet-101 on Large Datasets (… Training Time)
    _row(3, "ImageNet", "imagenet", ".6759", ".6999", ".6854", ".6745", model="resnet101",
         training_time="2 Days 21 Hours 12 Minutes"),
    _row(3, "MS COCO", "coco", ".7487", ".7840", ".7551", ".7515", model="resnet101",
         training_time="22 Hours 59 Minutes 41 s"),
)
# fmt: on


def _original_error(result: StudyResult) -> Reference | None:
    """He et al. 2016's error for the row's net and data, if the paper reports one (on COCO it
    reports detection only, see :data:`COCO_NOTE`)."""
    if result.model is None or result.task == "coco":
        return None
    return reference_for(result.model, result.task)


#: Every row of the study's Tables 1–3, as printed, each with its flags.
STUDY: tuple[StudyResult, ...] = tuple(
    replace(r, flags=study_flags(r, original=_original_error(r), others=_AS_PRINTED))
    for r in _AS_PRINTED
)
#: Its Table 1 (CIFAR-10) by architecture.
STUDY_TABLE1: dict[str, StudyResult] = {r.model: r for r in STUDY if r.table == 1 and r.model}
#: Its Table 3 (ResNet-101 on ImageNet and MS COCO) by task.
STUDY_TABLE3: dict[str, StudyResult] = {r.task: r for r in STUDY if r.table == 3}

STUDY_NOTES = (
    "The seed study's numbers are kept as it printed them (fractions; the report tables show "
    "them in %), never corrected, and each row lists what is inconsistent in it. He et al. 2016 "
    "stays the primary reference.",
    "Its Table 1 'Error (Baseline)' column is He et al. 2016's Table 6 error, printed to three "
    "or four digits.",
    "Its Table 2 heads the accuracy column 'Accuracy (%)' but prints fractions (.7123).",
    f"Its training times were measured on {STUDY_HARDWARE}. Its Figure 1 (training time "
    "against depth) prints no numbers, so none are kept from it.",
)


def study_result(model: str, dataset: str, *, table: int) -> StudyResult | None:
    """The study's row a run of ``model`` is put beside: its Table 1 row for the architecture
    (whatever the data, as the paper's error is), or its Table 3 row for the run's data."""
    key = model.strip().lower().replace("-", "")
    if table == 1:
        return STUDY_TABLE1.get(key)
    found = STUDY_TABLE3.get(task_of(dataset) or "")
    return found if found is not None and found.model == key else None


def references_document() -> dict[str, Any]:
    """Both sources — He et al. 2016 (with the COCO baseline) and the seed study, flagged — as
    ``GET /v1/reports/references`` answers and the bundles carry them (``references.json``)."""
    return {
        "items": [r.to_json() for r in all_references()],
        "notes": [COCO_NOTE],
        "sources": [
            {"key": "he2016", "citation": HE_2016, "role": "primary reference"},
            {"key": "chen2019", "citation": CHEN_2019, "role": "COCO multi-label baseline"},
            {
                "key": "seed_study",
                "citation": SEED_STUDY,
                "role": "second reference: as reported, flagged where inconsistent",
                "hardware": STUDY_HARDWARE,
            },
        ],
        "study": {
            "source": SEED_STUDY,
            "hardware": STUDY_HARDWARE,
            "items": [r.to_json() for r in STUDY],
            "notes": list(STUDY_NOTES),
        },
    }
