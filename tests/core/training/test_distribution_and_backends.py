"""The mirrored strategy on two logical CPUs, in a fresh interpreter: logical devices must be
configured before TensorFlow starts.

Training under the JAX backend (exact resume included) is tested where TensorFlow cannot even be
imported: tests/core/training/test_without_tensorflow.py.
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


def run_script(code, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_logical_cpus(tmp_path):
    out = run_script(MIRRORED, tmp_path)
    assert out["replicas"] == 2
    assert out["status"] == "completed" and out["epochs"] == 1
    assert out["loss"] == out["loss"]  # not NaN
