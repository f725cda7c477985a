"""The ``resnet`` command line, run in-process with typer's CliRunner on tiny synthetic data."""

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from core import catalogue as catalogue_module
from core import cli
from core.catalogue import cache_path, catalogue, static_entry
from core.cli import train as train_module
from core.models import CATALOGUE_NAMES, parse_architecture

DATA = "synthetic:256:16x16x3:3"


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args, env=None):
    return runner.invoke(cli.app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the train, evaluate and predict tests."""
    out = tmp_path_factory.mktemp("run")
    result = invoke(
        CliRunner(), "train", "resnet8", "--data", DATA, "--epochs", 1, "--batch-size", 32,
        "--train-limit", 96, "--validation", "0.25", "--precision", "float32", "--out", out,
    )  # fmt: skip
    return out, result


def test_version(runner):
    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("resnet-service ")


# --------------------------------------------------------------------------- archs


def test_archs_json_counts_resnet20_from_the_shipped_counts_and_caches_other_names(
    runner, tmp_path, monkeypatch
):
    env = {"RESNET_CACHE_DIR": str(tmp_path)}

    def no_building(spec):
        raise AssertionError(f"{spec.name} should have come from the shipped counts or cache")

    real_describe = catalogue_module.describe
    monkeypatch.setattr(catalogue_module, "describe", no_building)
    result = invoke(runner, "archs", "resnet20", "--json", env=env)
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    assert entry["name"] == "resnet20"
    assert entry["params"] == 269_722
    assert entry["paper_error"] == 8.75
    assert entry["flops"] == pytest.approx(41e6, rel=0.02)  # the paper's 41M

    # A name outside the catalogue is built once, then served from the cache.
    monkeypatch.setattr(catalogue_module, "describe", real_describe)
    built = invoke(runner, "archs", "resnet8", "--json", env=env)
    assert built.exit_code == 0, built.output
    assert cache_path(tmp_path).is_file()
    monkeypatch.setattr(catalogue_module, "describe", no_building)
    again = invoke(runner, "archs", "resnet8", "--json", env=env)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == json.loads(built.stdout)


def test_archs_table_comes_from_a_warm_cache(runner, tmp_path):
    entry = {
        "family": "cifar", "kind": "resnet", "block": "basic", "depth": 20,
        "input_shape": [32, 32, 3], "num_classes": 10, "params": 269_722, "flops": 4_089_184_256,
        "paper_error": 8.75, "paper_error_metric": "CIFAR-10", "paper_top5_error": None,
    }  # fmt: skip
    fake = {name: {"name": name, **entry} for name in CATALOGUE_NAMES}
    path = cache_path(tmp_path)
    path.write_text(json.dumps({"entries": fake}))
    result = invoke(runner, "archs", env={"RESNET_CACHE_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    for name in CATALOGUE_NAMES:
        assert name in result.stdout
    assert "0.27M" in result.stdout and "4.1G" in result.stdout and "8.75%" in result.stdout


def test_archs_unknown_name_lists_the_valid_ones(runner, tmp_path):
    result = invoke(runner, "archs", "resnet21", env={"RESNET_CACHE_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "resnet21" in result.stderr and "6n+2" in result.stderr
    result = invoke(runner, "archs", "vgg16", env={"RESNET_CACHE_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "Unknown architecture: 'vgg16'" in result.stderr and "resnet110" in result.stderr


# One catalogue net of each (family, kind, block): every path of the builder, counted for real.
# Building all of them (ResNet-1202, preact-ResNet-1001, ResNet-152, ...) took 166 s on a
# 2-core machine; the deep ones' counts are checked in tests/core/models/test_models.py.
CATALOGUE_SAMPLE = (
    "resnet20", "plain20", "preact_resnet110", "preact_resnet164", "wrn16_8", "resnext29_8x64d",
    "resnet18", "plain18", "resnet50", "preact_resnet18", "preact_resnet50", "resnext50_32x4d",
)  # fmt: skip


def _kind(name):
    spec = parse_architecture(name)
    return spec.family, spec.kind, spec.block


@pytest.mark.slow
def test_the_catalogue_counts_a_net_of_every_kind_and_keeps_the_counts(tmp_path):
    assert {_kind(n) for n in CATALOGUE_SAMPLE} == {_kind(n) for n in CATALOGUE_NAMES}
    built = []

    def count(*names, refresh=False):
        return catalogue(
            names=names, cache_dir=tmp_path, refresh=refresh,
            on_entry=lambda n, *_: built.append(n),
        )  # fmt: skip

    # refresh: built for real, not taken from the counts that ship with the package
    entries = count(*CATALOGUE_SAMPLE, refresh=True)
    assert built == list(CATALOGUE_SAMPLE)
    assert [e["name"] for e in entries] == list(CATALOGUE_SAMPLE)
    for entry in entries:
        counts = {"params": entry["params"], "flops": entry["flops"]}
        assert entry == {**static_entry(parse_architecture(entry["name"])), **counts}
        assert entry["params"] > 0 and entry["flops"] > 0
    counted = {e["name"]: e for e in entries}
    assert counted["resnet20"]["params"] == 269_722
    assert counted["resnet50"]["params"] == 25_557_032
    assert counted["resnet50"]["flops"] == pytest.approx(4.1e9, rel=0.02)
    # Option A adds no parameters: plain20 and resnet20 have the same; ImageNet's option B does.
    assert counted["plain20"]["params"] == counted["resnet20"]["params"]
    assert counted["plain18"]["params"] < counted["resnet18"]["params"]

    # Asked again, in another order: from the cache, nothing built.
    again = count(*CATALOGUE_SAMPLE[::-1])
    assert again == entries[::-1] and len(built) == len(CATALOGUE_SAMPLE)


def test_the_whole_catalogue_in_order_from_a_warm_cache(tmp_path):
    """The default is every catalogue name, in order; what it says without building a net."""
    entries = {
        name: {**static_entry(parse_architecture(name)), "params": 1, "flops": 2}
        for name in CATALOGUE_NAMES
    }
    cache_path(tmp_path).write_text(json.dumps({"entries": entries}))
    built = []
    listed = catalogue(cache_dir=tmp_path, on_entry=lambda name, *_: built.append(name))
    assert built == []
    assert [e["name"] for e in listed] == list(CATALOGUE_NAMES)
    by_name = {e["name"]: e for e in listed}
    assert by_name["resnet152"]["paper_error"] == 21.43
    assert by_name["resnet152"]["paper_top5_error"] == 5.71
    assert by_name["resnet110"]["paper_error"] == 6.43
    assert by_name["plain20"]["paper_error"] is None
    assert by_name["resnet1202"]["input_shape"] == [32, 32, 3]
    assert by_name["resnet1202"]["num_classes"] == 10
    assert by_name["resnext101_32x8d"]["input_shape"] == [224, 224, 3]
    assert by_name["resnext101_32x8d"]["num_classes"] == 1000


def test_human_counts():
    assert cli.human_count(40_551_040) == "41M"
    assert cli.human_count(4_089_184_256) == "4.1G"
    assert cli.human_count(9_960_000) == "10M"
    assert cli.human_params(269_722) == "0.27M"
    assert cli.human_params(25_557_032) == "25.6M"


# --------------------------------------------------------------------------- train


def test_train_writes_the_run_and_prints_metrics(trained):
    out, result = trained
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.stdout
    assert "accuracy" in result.stdout and "F1 (macro)" in result.stdout
    for name in ("model.keras", "labels.json", "config.json", "history.json", "metrics.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["train_limit"] == 96 and config["validation"] == 0.25
    assert json.loads((out / "metrics.json").read_text())["n"] == 24  # a quarter of 96


@pytest.mark.slow
def test_train_refuses_an_existing_run_and_resume_extends_it(trained, runner, tmp_path):
    out, _ = trained
    result = invoke(runner, "train", "resnet8", "--data", DATA, "--out", out)
    assert result.exit_code == 2
    assert "--resume" in result.stderr

    copy = tmp_path / "run"
    copy.mkdir()
    for path in out.rglob("*"):
        if path.is_file() and "tensorboard" not in path.parts:
            target = copy / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    result = invoke(runner, "train", "--resume", "--out", copy, "--epochs", 2, "--lr", 0.5)
    assert result.exit_code == 0, result.output
    assert "ignoring --lr" in result.stderr
    assert "epoch 2/2" in result.stdout and "epoch 1/2" not in result.stdout
    assert len(json.loads((copy / "history.json").read_text())) == 2


def test_invalid_config_exits_2_naming_the_field(runner, tmp_path):
    result = invoke(
        runner, "train", "resnet8", "--data", DATA, "--out", tmp_path / "x", "--epochs", 0,
        "--precision", "fp8",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "epochs (--epochs)" in result.stderr
    assert "precision (--precision)" in result.stderr and "'fp8'" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_train_takes_augmentation_policies_and_their_parameters(runner, tmp_path, monkeypatch):
    # The config the command trains (training with policies: tests/core/training).
    trained_configs = []

    def run_training(config, out, **kwargs):  # type: ignore[no-untyped-def]
        trained_configs.append(config)
        return SimpleNamespace(status="completed")

    monkeypatch.setattr(train_module, "run_training", run_training)
    result = invoke(
        runner, "train", "resnet8", "--data", "synthetic:24:8x8x3:2", "--out", tmp_path / "aug",
        "--augment", "cifar+mixup+cutout", "--augment-param", "cutout.size=4",
        "--augment-param", "mixup.alpha=0.2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (config,) = trained_configs
    assert config.augment == "cifar+cutout+mixup"
    assert config.augment_params.cutout.size == 4
    assert config.augment_params.mixup.alpha == 0.2


def test_bad_augmentation_exits_2_naming_the_option(runner, tmp_path):
    result = invoke(
        runner, "train", "resnet8", "--data", DATA, "--out", tmp_path / "x",
        "--augment", "cifar+cutot", "--augment-param", "mixup.alpha=0",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "augment (--augment): Unknown augmentation: 'cutot'" in result.stderr
    assert "randaugment, autoaugment-cifar10, cutout, mixup, cutmix" in result.stderr
    assert "augment_params.mixup.alpha (--augment-param)" in result.stderr
    result = invoke(
        runner, "train", "resnet8", "--data", DATA, "--out", tmp_path / "x",
        "--augment-param", "cutout.size",
    )  # fmt: skip
    assert result.exit_code == 2 and "expected POLICY.NAME=VALUE" in result.stderr
    assert not (tmp_path / "x").exists()


def test_unknown_architecture_lists_the_valid_ones(runner, tmp_path):
    result = invoke(runner, "train", "resnet_9000x", "--data", DATA, "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "Unknown architecture: 'resnet_9000x'" in result.stderr
    assert all(name in result.stderr for name in ("resnet20", "resnet50", "wrn28_10"))


def test_bad_data_source_exits_2(runner, tmp_path):
    result = invoke(runner, "train", "resnet8", "--data", "nope:/x", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "Unknown data source kind: 'nope'" in result.stderr


def test_a_cancel_stops_cleanly_and_says_how_to_resume(runner, tmp_path, monkeypatch):
    @contextmanager
    def already_interrupted():
        event = threading.Event()
        event.set()
        yield event

    monkeypatch.setattr(train_module, "_cancel_on_sigint", already_interrupted)
    out = tmp_path / "run"
    result = invoke(
        runner, "train", "resnet8", "--data", DATA, "--epochs", 2, "--batch-size", 32,
        "--precision", "float32", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 130, result.output
    assert "stopping after the current batch" in result.stdout
    assert f"resnet train --resume --out {out}" in result.stdout
    assert not (out / "model.keras").exists()


def test_the_first_ctrl_c_sets_a_flag_and_the_second_interrupts():
    before = signal.getsignal(signal.SIGINT)
    with train_module._cancel_on_sigint() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted.wait(5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises as soon as the signal arrives
    assert signal.getsignal(signal.SIGINT) is before


# --------------------------------------------------------------------------- evaluate / predict


def test_evaluate_the_trained_model(trained, runner):
    out, _ = trained
    result = invoke(runner, "evaluate", out / "model.keras", "--data", DATA, "--split", "train",
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 256 and metrics["split"] == "train"
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert {"precision_macro", "recall_macro", "f1_macro"} <= metrics.keys()

    table = invoke(runner, "evaluate", out, "--data", DATA, "--split", "train")
    assert table.exit_code == 0, table.output
    assert "accuracy" in table.stdout and "class_2" in table.stdout


def test_saved_predictions_give_the_metrics_back(trained, runner, tmp_path):
    out, _ = trained
    kept = tmp_path / "predictions.npz"
    scored = invoke(runner, "evaluate", out, "--data", DATA, "--split", "train", "--json",
                    "--save-predictions", kept)  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert "predictions of 256 images written" in scored.stderr
    metrics = json.loads(scored.stdout)
    again = invoke(runner, "rescore", kept, "--json")
    assert again.exit_code == 0, again.output
    recomputed = json.loads(again.stdout)
    assert recomputed == {k: metrics[k] for k in recomputed}
    assert "accuracy" in invoke(runner, "rescore", kept).stdout

    assert invoke(runner, "rescore", tmp_path / "none.npz").exit_code == 2
    (tmp_path / "bad.npz").write_text("text")
    bad = invoke(runner, "rescore", tmp_path / "bad.npz")
    assert bad.exit_code == 2 and "not a predictions file" in bad.stderr
    assert invoke(runner, "rescore", kept, "--threshold", "2").exit_code == 2


def test_evaluate_a_missing_split_or_model_exits_2(trained, runner, tmp_path):
    out, _ = trained
    result = invoke(runner, "evaluate", out, "--data", DATA)  # synthetic data has no test split
    assert result.exit_code == 2
    assert "no 'test' split" in result.stderr
    result = invoke(runner, "evaluate", tmp_path / "none.keras", "--data", DATA)
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_predict_reports_a_bad_image_and_predicts_the_rest(trained, runner, tmp_path):
    out, _ = trained
    # A folder name past any terminal's width: results and errors name each file whole, never
    # wrapped mid-name (CI once printed ".../good.pn\ng" from a long temporary path).
    folder = tmp_path / ("images-" + "x" * 120)
    folder.mkdir()
    good = folder / "good.png"
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(good)
    bad = folder / "bad.png"
    bad.write_bytes(b"not an image")

    result = invoke(runner, "predict", out, good, bad, "--top-k", 2)
    assert result.exit_code == 1
    assert str(good) in result.stdout and "class_" in result.stdout
    assert str(bad) in result.stderr

    result = invoke(runner, "predict", out / "model.keras", good, "--top-k", 2, "--json")
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert item["image"] == str(good)
    probs = [p["probability"] for p in item["predictions"]]
    assert len(probs) == 2 and probs[0] >= probs[1] and sum(probs) <= 1.0 + 1e-6


# --------------------------------------------------------------------------- bench / serve


@pytest.mark.slow
def test_bench_train_json(runner):
    result = invoke(runner, "bench", "train", "resnet8", "--batch-size", 8, "--steps", 2,
                    "--warmup", 1, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["architecture"] == "resnet8" and report["input_shape"] == [32, 32, 3]
    assert report["images_per_second"] > 0


def test_bench_train_refuses_a_bad_precision(runner):
    result = invoke(runner, "bench", "train", "resnet8", "--precision", "fp8")
    assert result.exit_code == 2
    assert "Unknown precision: 'fp8'" in result.stderr
