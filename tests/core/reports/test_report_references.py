"""The published numbers, their sources, and which one a run is compared with."""

from __future__ import annotations

import pytest

from core.catalogue import static_entry
from core.models.specs import CATALOGUE_NAMES, parse_architecture
from core.reports import references as refs


def test_cifar10_table6_with_sources_params_and_the_spread_of_resnet110() -> None:
    assert {k: r.value for k, r in refs.CIFAR10.items()} == {
        "resnet20": 8.75,
        "resnet32": 7.51,
        "resnet44": 7.17,
        "resnet56": 6.97,
        "resnet110": 6.43,
        "resnet1202": 7.93,
    }
    assert {k: r.params_millions for k, r in refs.CIFAR10.items()} == {
        "resnet20": 0.27,
        "resnet32": 0.46,
        "resnet44": 0.66,
        "resnet56": 0.85,
        "resnet110": 1.7,
        "resnet1202": 19.4,
    }
    r110 = refs.CIFAR10["resnet110"]
    assert (r110.mean, r110.std, r110.runs) == (6.61, 0.16, 5)
    assert r110.display() == "6.43 (best of 5; mean 6.61 ± 0.16)"
    assert refs.CIFAR10["resnet20"].display() == "8.75"
    assert all(
        "He, Zhang, Ren, Sun" in r.source and "Table 6" in r.source for r in refs.CIFAR10.values()
    )


def test_imagenet_ten_crop_top1_and_top5() -> None:
    assert {
        k: (refs.IMAGENET_TOP1[k].value, refs.IMAGENET_TOP5[k].value) for k in refs.IMAGENET_TOP1
    } == {
        "resnet34": (24.52, 7.46),
        "resnet50": (22.85, 6.71),
        "resnet101": (21.75, 6.05),
        "resnet152": (21.43, 5.71),
    }
    assert "10-crop" in refs.IMAGENET_TOP1["resnet101"].source
    assert "option B" in (refs.IMAGENET_TOP1["resnet34"].note or "")


def test_they_agree_with_the_architecture_catalogue() -> None:
    entries = [static_entry(parse_architecture(n)) for n in CATALOGUE_NAMES]
    paper_cifar10_error = {
        e["name"]: e["paper_error"]
        for e in entries
        if e["paper_error_metric"] == "CIFAR-10 test error"
    }
    paper_imagenet_error = {
        e["name"]: (e["paper_error"], e["paper_top5_error"])
        for e in entries
        if e["paper_error_metric"] == "ImageNet top-1 val error (10-crop)"
    }
    assert {k: r.value for k, r in refs.CIFAR10.items()} == paper_cifar10_error
    assert {
        k: (refs.IMAGENET_TOP1[k].value, refs.IMAGENET_TOP5[k].value) for k in refs.IMAGENET_TOP1
    } == paper_imagenet_error


def test_coco_is_ml_gcn_not_the_papers_detection_result() -> None:
    baseline = refs.COCO_MULTILABEL["resnet101"]
    assert baseline.value == 77.3 and baseline.metric == "mAP (%)"
    assert "Chen" in baseline.source and "ML-GCN" in baseline.source
    assert "448" in (baseline.note or "")
    assert refs.reference_for("resnet101", "coco:/data/coco2014") is baseline
    assert not refs.COCO_DETECTION_CONTEXT.comparable
    assert "detection" in refs.COCO_NOTE and "77.3" in refs.COCO_NOTE


@pytest.mark.parametrize(
    ("dataset", "task"),
    [
        ("cifar10", "cifar10"),
        ("cifar10:/data/cifar-10-python.tar.gz", "cifar10"),
        ("folder:cifar-10-jpeg", "cifar10"),
        ("cifar100", None),
        ("folder:pets", None),
        ("imagenet:/data/ilsvrc", "imagenet"),
        ("coco:/data/coco", "coco"),
        ("synthetic:64:8x8x3:2", None),
    ],
)
def test_task_of_a_data_source(dataset: str, task: str | None) -> None:
    assert refs.task_of(dataset) == task


def test_reference_for_depends_on_the_data() -> None:
    assert refs.reference_for("ResNet-56", "cifar10") is refs.CIFAR10["resnet56"]
    assert refs.reference_for("resnet50", "imagenet:/x") is refs.IMAGENET_TOP1["resnet50"]
    assert refs.reference_for("resnet56", "folder:pets") is None
    assert refs.reference_for("plain56", "cifar10") is None
    assert refs.paper_error("resnet101") is refs.IMAGENET_TOP1["resnet101"]
    assert len(refs.all_references()) == 6 + 4 + 4 + 1 + 1
