"""The same model served by BentoML, the peer our predict API is measured against (issue 11).

BentoML cannot load our ``.keras`` file, so it serves the model's SavedModel export (what
``resnet export --format savedmodel`` writes) through the ``serving_default`` signature: the
preprocessing is inside that graph, exactly as in ours. One request carries one image as a
multipart file named ``images``; BentoML's adaptive batching merges concurrent requests into one
model call (``max_batch_size``, ``max_latency_ms``), as our batcher does. The answer is the top
class and its probability, as ours with ``top_k=1``.

    BENTO_SAVED_MODEL=/path/to/savedmodel bentoml serve benchmarks.peers.bento_service:ResNet \\
        --port 3000

Settings (environment): ``BENTO_SAVED_MODEL`` (required), ``BENTO_WORKERS`` (1),
``BENTO_MAX_BATCH`` (64, as our ``predict_max_batch_size``), ``BENTO_MAX_LATENCY_MS`` (1000:
BentoML answers 503 to a request it expects to miss this; at 50 ms it refused requests while the
model's first calls at each batch size were slow, which ours does not do, so it gets room).
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
from PIL.Image import Image

SAVED_MODEL = os.environ.get("BENTO_SAVED_MODEL", "")
INPUT, OUTPUT = "image", "output_0"  # core.inference.export's SavedModel signature names


@bentoml.service(
    workers=int(os.environ.get("BENTO_WORKERS", "1")),
    resources={"cpu": str(os.cpu_count() or 1)},
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # as ours runs, with --no-access-log
)
class ResNet:
    def __init__(self) -> None:
        import tensorflow as tf

        self._tf = tf
        self._serve = tf.saved_model.load(SAVED_MODEL).signatures["serving_default"]
        shape = self._serve.structured_input_signature[1][INPUT].shape
        self._size = (int(shape[2]), int(shape[1]))  # PIL's (width, height)
        self._classes = int(self._serve.structured_outputs[OUTPUT].shape[-1])

    @bentoml.api(
        batchable=True,
        max_batch_size=int(os.environ.get("BENTO_MAX_BATCH", "64")),
        max_latency_ms=int(os.environ.get("BENTO_MAX_LATENCY_MS", "1000")),
    )
    def predict(self, images: list[Image]) -> list[dict[str, float | int]]:
        batch = np.stack(
            [np.asarray(i.convert("RGB").resize(self._size), np.float32) for i in images]
        )
        probabilities = self._serve(**{INPUT: self._tf.constant(batch)})[OUTPUT].numpy()
        top = probabilities.argmax(axis=1)
        return [
            {"index": int(k), "score": float(p[k])} for k, p in zip(top, probabilities, strict=True)
        ]
