"""Table 1 and the large-dataset table: rows, numbers, the paper's column, three formats."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from core.reports.tables import format_seconds, headline, large_dataset_table, mean_std, table1
from tests.core.reports.factory import labelled, make_run


def test_table1_one_row_per_run_with_the_papers_error() -> None:
    runs = labelled(
        make_run("a" * 32, "resnet20", accuracy=0.9125, seconds=3725.0),
        make_run("b" * 32, "plain20", accuracy=0.9000, seconds=3000.0),
        make_run("c" * 32, "resnet110", accuracy=0.9300, seconds=None),
    )
    table = table1(runs)
    rows = table.rows
    assert [r["model"] for r in rows] == ["resnet20", "plain20", "resnet110"]
    first = rows[0]
    assert first["run_id"] == "a" * 32
    assert first["accuracy"] == pytest.approx(91.25)
    assert first["precision"] == pytest.approx(90.25)
    assert first["recall"] == pytest.approx(89.25)
    assert first["f1"] == pytest.approx(89.75)
    assert first["error"] == pytest.approx(8.75)
    assert first["paper_error"] == 8.75
    assert first["training_time"] == 3725.0
    assert rows[1]["paper_error"] is None  # the paper's Table 6 has no plain nets
    assert rows[2]["paper_error"] == 6.43
    assert rows[2]["paper_error_text"] == "6.43 (best of 5; mean 6.61 ± 0.16)"
    assert rows[2]["training_time"] is None
    assert {r.model for r in table.references} == {"resnet20", "resnet110"}
    assert any("Table 6" in n for n in table.notes)


def test_markdown_csv_and_json() -> None:
    runs = labelled(
        make_run("a" * 32, "resnet20", accuracy=0.9125, seconds=3725.0),
        make_run("c" * 32, "resnet110", accuracy=0.93, seconds=42.0),
    )
    table = table1(runs)
    md = table.to_markdown()
    lines = md.splitlines()
    assert lines[0].startswith("### Table 1")
    header = lines[2]
    for title in ("Model", "Accuracy (%)", "Precision (%)", "Recall (%)", "F1 (%)", "Error (%)"):
        assert title in header
    assert "Paper's error (%)" in header and "Training time (s)" in header
    assert "| resnet20 | aaaaaaaa | 91.25 | 90.25 | 89.25 | 89.75 | 8.75 | 8.75 | 1:02:05 |" in md
    assert "6.43 (best of 5; mean 6.61 ± 0.16)" in md and "42.0 s" in md

    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [r["model"] for r in parsed] == ["resnet20", "resnet110"]
    assert float(parsed[0]["accuracy"]) == pytest.approx(91.25)
    assert float(parsed[0]["paper_error"]) == 8.75
    assert float(parsed[1]["training_time"]) == 42.0

    data = json.loads(json.dumps(table.to_json()))
    assert [c["key"] for c in data["columns"]] == [
        "model",
        "run_id",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "error",
        "paper_error",
        "training_time",
        "study_accuracy",
        "study_precision",
        "study_recall",
        "study_f1",
        "study_error",
        "study_flags",
    ]
    assert data["rows"][1]["paper_error"] == 6.43
    assert data["references"][0]["source"].startswith("He, Zhang, Ren, Sun")
    assert table.render("md") == md
    with pytest.raises(ValueError, match="Unknown format"):
        table.render("xlsx")


def test_aggregate_is_mean_and_sample_std_over_seeds() -> None:
    runs = labelled(
        make_run("a" * 32, "resnet20", accuracy=0.90, seconds=100.0, seed=0),
        make_run("b" * 32, "resnet20", accuracy=0.92, seconds=300.0, seed=1),
        make_run("c" * 32, "resnet20", accuracy=0.94, seconds=200.0, seed=2),
        make_run("d" * 32, "resnet56", accuracy=0.93, seconds=900.0, seed=0),
    )
    assert [r["label"] for r in runs] == ["resnet20 s0", "resnet20 s1", "resnet20 s2", "resnet56"]
    table = table1(runs, aggregate=True)
    r20, r56 = table.rows
    assert r20["n"] == 3 and r20["run_ids"] == ["a" * 32, "b" * 32, "c" * 32]
    assert r20["accuracy"] == pytest.approx(92.0)
    assert r20["accuracy_std"] == pytest.approx(2.0)
    assert r20["training_time"] == pytest.approx(200.0)
    assert r20["training_time_std"] == pytest.approx(100.0)
    assert r20["paper_error"] == 8.75
    assert r56["n"] == 1 and r56["accuracy_std"] == 0.0
    assert "92.00 ± 2.00" in table.to_markdown()
    assert "accuracy_std" in table.to_csv().splitlines()[0]


def test_runs_without_metrics_show_dashes() -> None:
    table = table1(labelled(make_run("q" * 32, "resnet20", accuracy=None, seconds=None)))
    assert table.rows[0]["accuracy"] is None and table.rows[0]["error"] is None
    assert "| resnet20 | qqqqqqqq | — | — | — | — | — | 8.75 | — |" in table.to_markdown()


def test_other_data_gets_a_note() -> None:
    table = table1(labelled(make_run("a" * 32, "resnet20", dataset="folder:pets")))
    assert any("other data than the paper's" in n for n in table.notes)


def test_headline_reads_single_and_multi_label_metrics() -> None:
    single = headline(
        {"accuracy": 0.5, "precision_macro": 0.4, "recall_macro": 0.3, "f1_macro": 0.2}
    )
    assert single == pytest.approx(
        {"accuracy": 50.0, "precision": 40.0, "recall": 30.0, "f1": 20.0, "error": 50.0}
        | {"top5_accuracy": None, "mAP": None}
    )
    multi = headline({"subset_accuracy": 0.4, "CP": 0.8, "CR": 0.6, "CF1": 0.7, "mAP": 0.75})
    assert multi["accuracy"] == pytest.approx(40.0) and multi["mAP"] == pytest.approx(75.0)
    assert headline({"accuracy": float("nan")})["accuracy"] is None


def test_large_dataset_table_with_imagenet_and_coco_references() -> None:
    imagenet = make_run(
        "i" * 32, "resnet101", accuracy=0.77, seconds=86400.0, dataset="imagenet:/d"
    )
    imagenet["metrics"]["top5_accuracy"] = 0.93
    coco = make_run("m" * 32, "resnet101", accuracy=None, seconds=7200.0, dataset="coco:/c")
    coco["metrics"] = {"subset_accuracy": 0.41, "CP": 0.8, "CR": 0.66, "CF1": 0.72, "mAP": 0.76}
    table = large_dataset_table(labelled(imagenet, coco))
    first, second = table.rows
    assert first["accuracy"] == pytest.approx(77.0)
    assert first["top5_accuracy"] == pytest.approx(93.0)
    assert first["reference"] == "top-1/top-5 error (%) 21.75/6.05"
    assert first["training_time"] == 86400.0
    assert second["accuracy"] == pytest.approx(41.0)
    assert second["precision"] == pytest.approx(80.0) and second["f1"] == pytest.approx(72.0)
    assert second["mAP"] == pytest.approx(76.0)
    assert second["reference_value"] == 77.3
    assert "ML-GCN" in second["reference_source"]
    assert any("object detection" in n for n in table.notes)
    md = table.to_markdown()
    assert "mAP (%) 77.30" in md and "24:00:00" in md
    for key in ("accuracy", "precision", "recall", "f1", "training_time"):
        assert key in table.to_csv().splitlines()[0]


def test_mean_std_and_format_seconds() -> None:
    assert mean_std([]) == (None, None)
    assert mean_std([None, 2.0]) == (2.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std is not None and math.isclose(std, 1.0)
    assert format_seconds(59.94) == "59.9 s"
    assert format_seconds(61) == "0:01:01"
    assert format_seconds(90061) == "25:01:01"


def test_table1_shows_the_papers_and_the_studys_numbers_beside_ours() -> None:
    runs = labelled(
        make_run("a" * 32, "resnet20", accuracy=0.9125, seconds=3725.0),
        make_run("b" * 32, "plain20", accuracy=0.9000, seconds=3000.0),
        make_run("c" * 32, "resnet110", accuracy=0.9300, seconds=42.0),
    )
    table = table1(runs)
    r20, p20, r110 = table.rows
    # ours, He et al.'s, and the study's Table 1 (0.8478 / .0923 as printed, in %)
    assert (r20["accuracy"], r20["paper_error"]) == (pytest.approx(91.25), 8.75)
    assert (r20["study_accuracy"], r20["study_error"]) == (84.78, 9.23)
    assert (r20["study_precision"], r20["study_recall"], r20["study_f1"]) == (84.69, 84.55, 84.68)
    assert r20["study_flags"] == ["accuracy_plus_error"]
    assert (r110["paper_error"], r110["study_accuracy"], r110["study_error"]) == (6.43, 95.64, 6.91)
    assert r110["study_flags"] == ["accuracy_plus_error", "above_he_2016"]
    assert p20["study_accuracy"] is None and p20["study_flags"] is None  # not in the study
    assert [s.row for s in table.study] == ["ResNet20", "ResNet110"]
    assert any("93.57" in n and "95.64" in n for n in table.notes)
    assert any("RTX 4060" in n for n in table.notes)

    md = table.to_markdown()
    assert "Paper's error (%)" in md and "Study's accuracy (%)" in md and "Study's flags" in md
    assert (
        "| resnet20 | aaaaaaaa | 91.25 | 90.25 | 89.25 | 89.75 | 8.75 | 8.75 | 1:02:05 "
        "| 84.78 | 84.69 | 84.55 | 84.68 | 9.23 | accuracy + error ≠ 1 |"
    ) in md
    assert (
        "| 95.64 | 94.56 | 96.84 | 92.31 | 6.91 | accuracy + error ≠ 1; above He et al. 2016 |"
        in md
    )
    assert "| — | — | — | — | — | — |" in md  # plain20: neither source has it

    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [(r["paper_error"], r["study_accuracy"], r["study_error"]) for r in parsed] == [
        ("8.75", "84.78", "9.23"),
        ("", "", ""),
        ("6.43", "95.64", "6.91"),
    ]
    assert parsed[2]["study_flags"] == "accuracy_plus_error above_he_2016"

    data = json.loads(json.dumps(table.to_json()))
    assert [s["row"] for s in data["study"]] == ["ResNet20", "ResNet110"]
    assert data["study"][1]["printed"]["accuracy"] == "0.9564"
    assert {f["code"] for f in data["study"][1]["flags"]} == {
        "accuracy_plus_error",
        "above_he_2016",
    }
    assert data["references"][0]["source"].startswith("He, Zhang, Ren, Sun")

    aggregated = table1(runs, aggregate=True)
    assert [(r["paper_error"], r["study_accuracy"]) for r in aggregated.rows] == [
        (8.75, 84.78),
        (None, None),
        (6.43, 95.64),
    ]
    assert aggregated.study == table.study and "Study's error (%)" in aggregated.to_markdown()


def test_table3_shows_the_studys_numbers_and_training_times_on_its_hardware() -> None:
    imagenet = make_run(
        "i" * 32, "resnet101", accuracy=0.77, seconds=86400.0, dataset="imagenet:/d"
    )
    coco = make_run("m" * 32, "resnet101", accuracy=0.40, seconds=7200.0, dataset="coco:/c")
    other = make_run("o" * 32, "resnet50", accuracy=0.70, seconds=3600.0, dataset="imagenet:/d")
    table = large_dataset_table(labelled(imagenet, coco, other))
    first, second, third = table.rows
    assert (first["study_accuracy"], first["study_f1"]) == (67.59, 67.45)
    assert first["study_training_time"] == 249120.0
    assert first["study_training_time_text"] == "2 Days 21 Hours 12 Minutes"
    assert first["study_flags"] == []
    assert (second["study_accuracy"], second["study_precision"]) == (74.87, 78.40)
    assert second["study_training_time"] == 82781.0
    assert second["study_flags"] == ["tables_disagree"]
    assert third["study_accuracy"] is None  # the study trained ResNet-101 only
    md = table.to_markdown()
    assert "Study's training time, one RTX 4060 (s)" in md
    assert "| 24:00:00 | top-1/top-5 error (%) 21.75/6.05 | 67.59 | 69.99 | 68.54 | 67.45 " in md
    assert "| 2 Days 21 Hours 12 Minutes | none |" in md
    assert "| 22 Hours 59 Minutes 41 s | ≠ its Table 2 |" in md
    assert any("NVIDIA GeForce RTX 4060 16 GB" in n for n in table.notes)
    assert any(n.startswith("Study's MS COCO (its Table 3): its Table 2") for n in table.notes)
    header = table.to_csv().splitlines()[0].split(",")
    assert header[-6:] == [
        "study_accuracy",
        "study_precision",
        "study_recall",
        "study_f1",
        "study_training_time",
        "study_flags",
    ]
    assert [s.row for s in table.study] == ["ImageNet", "MS COCO"]
