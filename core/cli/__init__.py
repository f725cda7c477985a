"""The library's command line: list architectures, train, evaluate, predict, export, benchmark.

One module per command group (``archs``, ``train``, ``evaluate`` with ``rescore``,
``predict``, ``export``, ``bench``, ``weights``), what they share in ``output``, and the app
in ``app``.
``app`` here is the library's own command (``python -m core.cli``); a program that also serves
models builds its own with :func:`build_app`, passing a remote predictor and adding its commands.

Every command is a thin shell over the library (``core.models``, ``core.training``, ...): it
parses options, shows progress and prints results, as a table or, with ``--json``, as JSON on
stdout (progress then goes to stderr). TensorFlow is imported only by the commands that need it,
so ``resnet --help`` and a cached ``resnet archs`` answer at once.

Exit codes: 0 success; 1 some inputs failed (``predict``); 2 invalid options, configuration,
data or model; 130 interrupted (a cancelled ``train`` can be resumed with ``--resume``).
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) drowns the output; set
# before any command imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.cli.app import build_app
from core.cli.output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    fail,
    human_count,
    human_params,
    metrics_table,
)
from core.cli.predict import RemotePredictor, predict_local, show_predictions
from core.cli.train import build_config, run_training

app = build_app()

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "RemotePredictor",
    "app",
    "build_app",
    "build_config",
    "fail",
    "human_count",
    "human_params",
    "metrics_table",
    "predict_local",
    "run_training",
    "show_predictions",
]
