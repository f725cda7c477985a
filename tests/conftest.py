"""Shared test setup: quiet TensorFlow, TensorFlow as the Keras backend, the throwaway
PostgreSQL and Redis servers (started once per test session from the binaries on the machine),
and tiny models trained on real images (once per session, on first use).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Served models stay on Keras in tests: the default (auto) exports every model a test serves
# to ONNX in the background, seconds of CPU each. The tests that pass predict_engine (auto,
# onnx) check the other engines, the background choice included.
os.environ.setdefault("RESNET_PREDICT_ENGINE", "keras")

# `pytest` run directly (rather than `python -m pytest`) does not put the repository root on
# sys.path, and `tests` is a namespace package: make `tests.fixtures` importable either way.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.fixtures.servers import postgres_server, postgres_url, redis_server  # noqa: E402
from tests.fixtures.trained import cifar_images, tiny_run  # noqa: E402

__all__ = ["cifar_images", "postgres_server", "postgres_url", "redis_server", "tiny_run"]
