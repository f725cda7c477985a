"""A short but honest learning test on real images: Fashion-MNIST from Debian's package."""

from pathlib import Path

import pytest

from core.training import make_config, train

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_resnet20_learns_fashion_mnist_far_above_chance(tmp_path):
    cfg = make_config(
        "resnet20",
        f"idx:{FASHION}",
        epochs=3,
        batch_size=64,
        train_limit=4000,
        test_limit=1000,
        schedule={"kind": "onecycle", "base_lr": 0.1},
        augment="none",
        tensorboard=False,
    )
    result = train(cfg, tmp_path)
    assert result.status == "completed"
    assert result.metrics["split"] == "test" and result.metrics["n"] == 1000
    # Chance is 10%; three short epochs on 4,000 images reach well over 70%.
    print("fashion-mnist test accuracy", result.metrics["accuracy"])
    assert result.metrics["accuracy"] > 0.70, result.metrics["accuracy"]
    assert result.history[-1].loss < result.history[0].loss
