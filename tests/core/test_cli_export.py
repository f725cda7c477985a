"""``resnet export RUN_DIR --format savedmodel|onnx|keras [--out …]``, run in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from core import cli


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli.app, [str(a) for a in args])


@pytest.mark.slow
def test_export_writes_the_serving_layout_and_says_what_it_checked(
    tiny_run: Callable[[str], Path], cifar_images: np.ndarray, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    from core.inference import float32_model, load_keras_model

    run = tiny_run("mixed_bfloat16")
    out = tmp_path / "tiny"
    result = invoke("export", run, "--format", "onnx", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["format"] == "onnx" and facts["trained_precision"] == "mixed_bfloat16"
    assert facts["path"] == str(out / "1" / "model.onnx") and facts["version"] == 1
    assert facts["verified_max_abs_diff"]["float32_keras_model"] <= 1e-4
    assert json.loads((out / "labels.json").read_text())["class_names"][0] == "airplane"

    session = ort.InferenceSession(facts["path"], providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": cifar_images})
    want = float32_model(load_keras_model(run / "model.keras"))(cifar_images).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)

    again = invoke("export", run, "--format", "onnx", "--out", out)
    assert again.exit_code == 2 and "exists already" in again.output

    # No --out: beside the run, in RUN/export/FORMAT/1/, and a table instead of JSON.
    keras_export = invoke("export", run, "-f", "keras")
    assert keras_export.exit_code == 0, keras_export.output
    assert (run / "export" / "keras" / "1" / "model.keras").is_file()
    assert "trained in mixed_bfloat16" in keras_export.stdout


def test_an_unknown_format_or_a_missing_model_exits_2_naming_it(tmp_path: Path) -> None:
    unknown = invoke("export", tmp_path, "--format", "tflite")
    assert unknown.exit_code == 2
    said = " ".join(unknown.output.replace("│", " ").split())  # unwrap rich's error box
    assert "'tflite' is not one of 'savedmodel', 'onnx', 'keras'" in said
    missing = invoke("export", tmp_path, "--format", "onnx")
    assert missing.exit_code == 2
    assert f"model file not found: {tmp_path / 'model.keras'}" in missing.output
    assert not (tmp_path / "export").exists()
