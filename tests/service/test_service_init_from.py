"""``POST /v1/runs`` with ``init_from``: a weights file under the data root, checked at the door
(confined to the root, present, of the run's architecture) and its layout and normalisation made
the run's; ``freeze`` and ``backbone_lr_multiplier`` beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import pytest
from fastapi.testclient import TestClient

from core.models.layout import weight_shapes
from core.models.specs import parse_architecture
from core.models.weights import write_safetensors
from core.models.weights.plans import make_plan, source_shapes
from jobs.settings import Settings
from tests.fixtures.torchvision import random_layers, to_torchvision

DATA = "synthetic:64:16x16x3:3"


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, Any]:
    return to_torchvision(random_layers("resnet18", num_classes=10), [2, 2, 2, 2])


@pytest.fixture
def weights(settings: Settings, resnet18_state: dict[str, Any]) -> Path:
    folder = settings.data_dir / "weights"
    folder.mkdir(parents=True)
    return write_safetensors(folder / "resnet18.safetensors", resnet18_state)


def keras_named_h5(path: Path, arch: str) -> Path:
    """A keras.applications-named weights file of ``arch``'s shapes (values never written:
    HDF5 allocates on first write, so the file stays small)."""
    spec = parse_architecture(arch)
    shapes = source_shapes(
        make_plan("keras", spec, head=True), weight_shapes(spec, num_classes=1000)
    )
    layers: dict[str, list[str]] = {}
    for name in shapes:
        layers.setdefault(name.split("/")[0], []).append(name)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in layers]
        for layer, names in layers.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = [f"{n}:0".encode() for n in names]
            for name in names:
                group.create_dataset(f"{name}:0", shape=shapes[name], dtype="float32")
    return path


def post(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/runs", json={"data": DATA, **body}, headers=headers)


def test_a_run_from_torchvision_weights_takes_their_layout_and_normalisation(
    client: TestClient, admin: dict[str, str], weights: Path
) -> None:
    created = post(
        client, admin, architecture="resnet18", init_from="weights/resnet18.safetensors",
        freeze=["stem", "stage1"], backbone_lr_multiplier=0.1, input_shape=[32, 32, 3],
    )  # fmt: skip
    assert created.status_code == 202, created.text
    config = created.json()["config"]
    assert config["init_from"] == "weights/resnet18.safetensors"  # relative: the worker resolves
    assert (config["padding"], config["stride_in"]) == ("symmetric", "3x3")
    assert config["normalization"] == "per_channel"
    assert config["freeze"] == ["stem", "stage1"] and config["backbone_lr_multiplier"] == 0.1
    # the same, said explicitly, is fine; a preset's normalisation gives way to the weights'
    again = post(
        client, admin, architecture="resnet18", init_from="./weights//resnet18.safetensors",
        padding="symmetric", preset="cifar-paper",
    )  # fmt: skip
    assert again.status_code == 202, again.text
    assert again.json()["config"]["init_from"] == "weights/resnet18.safetensors"
    assert again.json()["config"]["normalization"] == "per_channel"


def test_keras_weights_make_the_run_v1(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    keras_named_h5(settings.data_dir / "resnet50_keras.h5", "resnet50")
    created = post(client, admin, architecture="resnet50", init_from="resnet50_keras.h5")
    assert created.status_code == 202, created.text
    assert created.json()["config"]["stride_in"] == "1x1"
    refused = post(
        client, admin, architecture="resnet50", init_from="resnet50_keras.h5", stride_in="3x3"
    )
    assert refused.status_code == 422
    detail = refused.json()["error"]["details"][0]
    assert detail["field"] == "body.stride_in" and detail["received"] == "3x3"
    assert "keras weights of init_from were trained with stride_in '1x1'" in detail["message"]
    deeper = post(client, admin, architecture="resnet101", init_from="resnet50_keras.h5")
    assert deeper.status_code == 422
    assert "does not fit resnet101" in deeper.json()["error"]["details"][0]["message"]


@pytest.mark.parametrize(
    ("init_from", "architecture", "expected"),
    [
        ("../outside.safetensors", "resnet18", "must not contain '..'"),
        ("/etc/passwd", "resnet18", "must be relative to the data root"),
        ("weights/absent.safetensors", "resnet18", "no such file or folder"),
        ("weights", "resnet18", "weights: no such file"),  # a folder
        ("link.safetensors", "resnet18", "resolves outside the data root"),
        ("notes.txt", "resnet18", "not a weights file this service reads"),
        ("weights/resnet18.safetensors", "resnet34", "does not fit resnet34: 80 tensors missing"),
        ("weights/resnet18.safetensors", "resnet20", "for ImageNet ResNets; 'resnet20' is not"),
    ],
)
def test_init_from_outside_the_root_missing_or_not_fitting_is_a_422(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    weights: Path,
    tmp_path: Path,
    init_from: str,
    architecture: str,
    expected: str,
) -> None:
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(weights.read_bytes())
    os.symlink(outside, settings.data_dir / "link.safetensors")
    (settings.data_dir / "notes.txt").write_text("hello")
    response = post(client, admin, architecture=architecture, init_from=init_from)
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == "body.init_from" and detail["received"] == init_from
    assert expected in detail["message"]
    assert str(tmp_path) not in response.text  # the server's layout stays private


def test_a_padding_that_contradicts_the_weights_is_a_422_naming_it(
    client: TestClient, admin: dict[str, str], weights: Path
) -> None:
    response = post(
        client, admin, architecture="resnet18", init_from="weights/resnet18.safetensors",
        padding="same",
    )  # fmt: skip
    assert response.status_code == 422
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == "body.padding"
    assert "leave padding out or set it to 'symmetric'" in detail["message"]
    bad = post(client, admin, architecture="resnet18", backbone_lr_multiplier=0)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "body.backbone_lr_multiplier"
