"""The mirrored strategy on two logical CPUs, and training under the JAX backend.

Both need a fresh interpreter: logical devices must be configured before TensorFlow starts, and
the Keras backend is chosen at import.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

MIRRORED = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from core.training import make_config, train
    from core.training.precision import make_strategy
    strategy = make_strategy("mirrored")
    cfg = make_config("resnet8", "synthetic:128:16x16x3:2", epochs=1, batch_size=32,
                      precision="float32", strategy="mirrored", tensorboard=False)
    result = train(cfg, sys.argv[1])
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "status": result.status,
                      "epochs": result.epochs_completed, "loss": result.history[0].loss}))
    """
)

JAX = textwrap.dedent(
    """
    import json, sys
    import keras
    from core.training import make_config, train
    cfg = make_config("resnet8", "synthetic:128:16x16x3:2", epochs=2, batch_size=32,
                      precision="float32", tensorboard=False, validation=0.25)
    result = train(cfg, sys.argv[1])
    print(json.dumps({"backend": keras.backend.backend(), "status": result.status,
                      "losses": [r.loss for r in result.history]}))
    """
)


def run_script(code, tmp_path, **env):
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_logical_cpus(tmp_path):
    out = run_script(MIRRORED, tmp_path)
    assert out["replicas"] == 2
    assert out["status"] == "completed" and out["epochs"] == 1
    assert out["loss"] == out["loss"]  # not NaN


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("jax") is None, reason="jax not installed"
)
def test_the_core_trains_under_the_jax_backend(tmp_path):
    out = run_script(JAX, tmp_path, KERAS_BACKEND="jax")
    assert out["backend"] == "jax"
    assert out["status"] == "completed"
    assert len(out["losses"]) == 2 and all(v == v for v in out["losses"])


JAX_RESUME = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import keras, numpy as np
    from core.models import CUSTOM_OBJECTS
    from core.training import TrainHooks, make_config, train
    cfg = make_config("preact_resnet8", "synthetic:128:16x16x3:2", epochs=3, batch_size=32,
                      precision="float32", tensorboard=False, validation=0.25, dropout=0.3,
                      augment="cifar", progress_every=1,
                      schedule={"kind": "step", "base_lr": 0.05, "boundary_epochs": [2]})
    root = Path(sys.argv[1])
    whole = train(cfg, root / "whole")
    batches = []  # 3 batches an epoch: cancel inside epoch 2, as a kill would leave it
    hooks = TrainHooks(on_progress=batches.append, should_cancel=lambda: len(batches) >= 4)
    first = train(cfg, root / "resumed", hooks=hooks)
    resumed = train(cfg, root / "resumed", resume=True)
    a, b = (keras.saving.load_model(r.model_path, custom_objects=CUSTOM_OBJECTS, compile=False)
            for r in (whole, resumed))
    same = all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    print(json.dumps({"backend": keras.backend.backend(), "killed_after": first.epochs_completed,
                      "whole": [r.loss for r in whole.history],
                      "resumed": [r.loss for r in resumed.history], "same_weights": same}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("jax") is None, reason="jax not installed"
)
def test_exact_resume_under_the_jax_backend(tmp_path):
    """Issue 15 under JAX: cancelled inside epoch 2 and resumed, the run is the whole one."""
    out = run_script(JAX_RESUME, tmp_path, KERAS_BACKEND="jax")
    assert out["backend"] == "jax" and out["killed_after"] == 1
    assert out["resumed"] == out["whole"] and len(out["whole"]) == 3
    assert out["same_weights"]
