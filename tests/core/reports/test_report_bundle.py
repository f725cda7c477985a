"""Reproducibility bundles: what is in the zip, and where the environment comes from."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from core.reports.bundle import api_environment, experiment_bundle, run_bundle
from core.reports.references import references_document
from tests.core.reports.factory import check_png, labelled, make_run


@pytest.mark.slow
def test_a_run_bundle_has_config_environment_history_metrics_and_figures() -> None:
    [run] = labelled(make_run("ab" * 16, "resnet20", accuracy=0.9, confusion=[[3, 1], [0, 4]]))
    run["config"] = {"architecture": "resnet20", "data": "cifar10", "epochs": 3, "seed": 0}
    zf = zipfile.ZipFile(io.BytesIO(run_bundle(run)))
    names = set(zf.namelist())
    assert {
        "README.txt",
        "run.json",
        "config.json",
        "environment.json",
        "history.csv",
        "metrics.json",
        "figures/curves.png",
        "figures/curves.svg",
        "figures/confusion.png",
        "figures/confusion.svg",
    } <= names
    assert json.loads(zf.read("config.json"))["epochs"] == 3
    history = list(csv.DictReader(io.StringIO(zf.read("history.csv").decode())))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    assert float(history[0]["loss"]) == 2.0
    metrics = json.loads(zf.read("metrics.json"))
    assert metrics["accuracy"] == 0.9 and metrics["confusion_matrix"] == [[3, 1], [0, 4]]
    env = json.loads(zf.read("environment.json"))
    assert env["source"] == "api" and env["python"] and "tensorflow" in env["packages"]
    check_png(zf.read("figures/curves.png"))
    assert run_bundle(run) == run_bundle(run)  # fixed member times: same records, same bytes


def test_a_bundle_carries_both_reference_sources() -> None:
    [run] = labelled(make_run("ef" * 16, "resnet110"))
    zf = zipfile.ZipFile(io.BytesIO(run_bundle(run)))
    references = json.loads(zf.read("references.json"))
    assert references == json.loads(json.dumps(references_document()))
    assert {s["key"] for s in references["sources"]} == {"he2016", "chen2019", "seed_study"}
    r110 = next(i for i in references["study"]["items"] if i["model"] == "resnet110")
    assert {f["code"] for f in r110["flags"]} == {"accuracy_plus_error", "above_he_2016"}
    assert "references.json" in zf.read("README.txt").decode()


def test_the_workers_recorded_environment_wins() -> None:
    [run] = labelled(make_run("cd" * 16, "resnet20"))
    run["environment"] = {"tensorflow": "2.21.0", "cuda": "12.5", "device": "H100"}
    env = json.loads(zipfile.ZipFile(io.BytesIO(run_bundle(run))).read("environment.json"))
    assert env == {"source": "worker", "tensorflow": "2.21.0", "cuda": "12.5", "device": "H100"}


def test_api_environment_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from core.reports.bundle import api_environment; api_environment(); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert api_environment()["source"] == "api"


@pytest.mark.slow
def test_an_experiment_bundle_has_the_table_figures_and_each_run() -> None:
    runs = labelled(
        make_run("a1" * 16, "resnet20", accuracy=0.91, seed=0),
        make_run("a2" * 16, "resnet20", accuracy=0.93, seed=1),
        make_run("b1" * 16, "plain20", accuracy=0.90, seed=0),
    )
    data = experiment_bundle({"id": "e" * 32, "name": "depth", "cells": []}, runs)
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = set(zf.namelist())
    assert {
        "experiment.json",
        "table1.md",
        "table1.csv",
        "table1.json",
        "table1_mean_std.md",
    } <= names
    assert "figures/plain_vs_residual.png" in names and "figures/error_vs_depth.svg" in names
    assert "figures/confusion.png" not in names  # no run was evaluated with a confusion matrix
    assert f"runs/resnet20_s0-{'a1' * 4}/config.json" in names
    assert f"runs/plain20-{'b1' * 4}/history.csv" in names
    assert "92.00 ± 1.41" in zf.read("table1_mean_std.md").decode()
    references = json.loads(zf.read("references.json"))
    assert references == json.loads(json.dumps(references_document()))
    assert f"runs/plain20-{'b1' * 4}/references.json" in names
    table = zf.read("table1.md").decode()
    assert "Paper's error (%)" in table and "Study's accuracy (%)" in table
    assert "accuracy + error ≠ 1" in table  # the study's ResNet20 row, flagged
    assert "the seed study's" in zf.read("README.txt").decode()
