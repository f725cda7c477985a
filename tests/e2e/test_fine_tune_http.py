"""Fine-tuning over HTTP from an imported weights file, every component a real process.

``resnet serve`` (the API under uvicorn and a worker) is given a torchvision ResNet-18 state
dict as ``.safetensors`` under its data root and a small folder of images. ``POST /v1/runs``
starts a run from the file with stem to stage 3 frozen and the backbone at a tenth of the rate;
the run succeeds, its config carries the file's layout, and the model it saved holds the file's
weights where they were frozen and a new head for the folder's classes.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.models import CUSTOM_OBJECTS
from core.models.weights import write_safetensors
from tests.e2e.stacks import embedded_stack, write_image_folder
from tests.e2e.test_http_end_to_end import watch_run
from tests.fixtures.torchvision import random_layers, to_torchvision

pytestmark = pytest.mark.slow
FROZEN = ("stem", "stage1", "stage2", "stage3")


def test_a_run_fine_tunes_an_imported_weights_file_over_http(tmp_path):
    layers = random_layers("resnet18", num_classes=1000)
    with embedded_stack(tmp_path) as stack, stack.client() as api:
        (stack.data_root / "weights").mkdir(parents=True)
        write_safetensors(
            stack.data_root / "weights" / "resnet18.safetensors",
            to_torchvision(layers, [2, 2, 2, 2]),
        )
        write_image_folder(stack.data_root / "colours", classes=3, per_class=40)
        registered = api.post(
            "/v1/datasets", json={"name": "colours", "kind": "folder", "path": "colours"}
        )
        assert registered.status_code == 201, registered.text

        body = {
            "architecture": "resnet18", "dataset": "colours",
            "init_from": "weights/resnet18.safetensors", "freeze": list(FROZEN),
            "backbone_lr_multiplier": 0.1, "input_shape": [32, 32, 3], "epochs": 2,
            "batch_size": 24, "validation": 0.25, "precision": "float32", "tensorboard": False,
            "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0},
            "schedule": {"kind": "constant", "base_lr": 0.05},
        }  # fmt: skip
        outside = api.post("/v1/runs", json={**body, "init_from": "../resnet18.safetensors"})
        assert outside.status_code == 422
        assert outside.json()["error"]["details"][0]["field"] == "body.init_from"

        created = api.post("/v1/runs", json=body)
        assert created.status_code == 202, created.text
        run = created.json()
        assert run["config"]["padding"] == "symmetric"
        seen = watch_run(api, run["id"], timeout=300)
        finished = api.get(f"/v1/runs/{run['id']}").json()
        assert seen[-1] == "succeeded", (finished, stack.log_tail())
        assert finished["metrics"]["split"] == "val" and finished["metrics"]["n"] == 30

    model = keras.saving.load_model(
        tmp_path / "var" / "runs" / run["id"] / "model.keras",
        custom_objects=CUSTOM_OBJECTS,
        compile=False,
    )
    assert model.get_layer("stem_conv_pad").padding == ((3, 3), (3, 3))
    for name, values in layers.items():
        if name.startswith(FROZEN):
            for got, want in zip(model.get_layer(name).get_weights(), values, strict=True):
                np.testing.assert_array_equal(got, want)
    trained = model.get_layer("stage4_block2_conv2").get_weights()[0]
    assert not np.array_equal(trained, layers["stage4_block2_conv2"][0])
    assert model.get_layer("logits").get_weights()[0].shape == (512, 3)
