"""``resnet weights list|download|import``, run in-process; downloads from file:// URLs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from core import cli
from core.models.weights import (
    PUBLISHED,
    WeightsFileError,
    download_weights,
    published,
    write_safetensors,
)
from tests.fixtures.torchvision import random_layers, to_torchvision


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def test_the_catalogue_names_each_published_file_with_its_checksum():
    result = invoke("weights", "list", "--json")
    assert result.exit_code == 0, result.output
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    keras50 = entries["resnet50-keras"]
    assert keras50["url"] == (
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    )
    assert keras50["md5"] == "2cb95161c43110f7111970584f804107"  # keras' WEIGHTS_HASHES
    tv50 = entries["resnet50-torchvision-v1"]
    assert tv50["url"] == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert tv50["sha256_prefix"] == "0676ba61" and tv50["source"] == "torchvision"
    assert {e["architecture"] for e in entries.values()} >= {
        f"resnet{d}" for d in (18, 34, 50, 101, 152)
    }
    assert "resnet152-keras-notop" in invoke("weights", "list").stdout


def test_a_download_is_kept_only_with_the_published_checksum(tmp_path):
    copy = tmp_path / "mirror" / "resnet18-f37072fd.pth"
    copy.parent.mkdir()
    copy.write_bytes(b"not the published weights")
    # The real entry: the mirror's file is not the published one, and nothing is left behind.
    refused = invoke(
        "weights", "download", "resnet18-torchvision-v1", "--out", tmp_path / "w",
        "--url", copy.as_uri(),
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "expected it to start f37072fd" in refused.output
    assert not any((tmp_path / "w").iterdir())
    # An entry whose checksum is the file's: downloaded under the published name, then kept.
    md5 = hashlib.md5(copy.read_bytes(), usedforsecurity=False).hexdigest()
    entry = replace(PUBLISHED["resnet50-keras"], url=copy.as_uri(), md5=md5)
    path = download_weights(entry, tmp_path / "w")
    assert path == tmp_path / "w" / "resnet18-f37072fd.pth"
    assert path.read_bytes() == copy.read_bytes()
    copy.unlink()
    assert download_weights(entry, tmp_path / "w") == path  # there already: not fetched
    with pytest.raises(WeightsFileError, match="could not download"):
        download_weights(entry, tmp_path / "other")
    unknown = invoke("weights", "download", "resnet51-keras")
    assert unknown.exit_code == 2 and "Expected one of resnet50-keras" in unknown.output
    with pytest.raises(WeightsFileError, match="Unknown weights"):
        published("vgg16")


@pytest.mark.slow
def test_import_writes_a_model_with_the_files_weights_layout_and_preprocessing(tmp_path):
    import keras

    from core.models import CUSTOM_OBJECTS, build_model
    from core.models.weights import read_safetensors

    layers = random_layers("resnet18", num_classes=7)
    state = to_torchvision(layers, [2, 2, 2, 2])
    path = write_safetensors(tmp_path / "r18.safetensors", state)
    out = tmp_path / "models" / "r18.keras"
    result = invoke(
        "weights", "import", path, "--arch", "resnet18", "--out", out, "--input-size", 64, "--json"
    )
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts == {
        "model": str(out), "architecture": "resnet18", "source": "torchvision",
        "format": "safetensors", "stride_in": "3x3", "padding": "symmetric", "classes": 7,
        "head_from_file": True, "input_shape": [64, 64, 3],
    }  # fmt: skip
    model = keras.saving.load_model(out, custom_objects=CUSTOM_OBJECTS)
    np.testing.assert_array_equal(model.get_layer("stage3_block2_bn1").get_weights()[2],
                                  layers["stage3_block2_bn1"][2])  # fmt: skip
    np.testing.assert_allclose(
        model.get_layer("preprocess").get_weights()[0], [123.675, 116.28, 103.53], rtol=1e-6
    )
    # and back: the exported state dict is the file's, tensor for tensor
    exported = invoke("weights", "export", out, "--out", tmp_path / "back.safetensors")
    assert exported.exit_code == 0, exported.output
    back = read_safetensors(tmp_path / "back.safetensors")
    assert set(back) == set(state)
    for name, value in state.items():
        np.testing.assert_array_equal(back[name].load(), value)
    # a model without torchvision's layout would compute something else in PyTorch: refused
    other = tmp_path / "same.keras"
    build_model("resnet18", input_shape=(32, 32, 3), num_classes=3).save(other)
    refused = invoke("weights", "export", other, "--out", tmp_path / "x.safetensors")
    assert refused.exit_code == 2 and "does not have torchvision's layout" in refused.output


def test_import_refuses_a_file_of_another_architecture_or_a_non_keras_out(tmp_path):
    path = write_safetensors(
        tmp_path / "r18.safetensors", to_torchvision(random_layers("resnet18"), [2, 2, 2, 2])
    )
    wrong = invoke("weights", "import", path, "--arch", "resnet34", "--out", tmp_path / "m.keras")
    assert wrong.exit_code == 2 and "does not fit resnet34" in wrong.output
    suffix = invoke("weights", "import", path, "--arch", "resnet18", "--out", tmp_path / "m.h5")
    assert suffix.exit_code == 2 and "--out must name a .keras file" in suffix.output
    assert not list(Path(tmp_path).glob("m.*"))
