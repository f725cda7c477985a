"""The same model served by BentoML, the peer our predict API is measured against (issue 11).

BentoML cannot load our ``.keras`` file, so it serves the model's SavedModel export (what
``resnet export --format savedmodel`` writes) through the ``serving_default`` signature: the
preprocessing is inside that graph, exactly as in ours. One request carries one image as a
multipart file named ``images``; BentoML's adaptive batching merges concurrent requests into one
model call (``max_batch_size``, ``max_latency_ms``), as our batcher does. The answer is the top
class and its probability, as ours with ``top_k=1``.

    BENTO_SAVED_MODEL=/path/to/savedmodel bentoml serve benchmarks.peers.bento_service:ResNet \\
        --port 3000

``BENTO_ONNX_MODEL=/path/to/model.onnx`` instead serves the model's ONNX export through ONNX
Runtime (the engine ours picks on this CPU), so the two servers can be compared on the same
engine; ``BENTO_ONNX_THREADS`` sets its intra-op threads (default: ONNX Runtime's own choice).

Settings (environment): ``BENTO_SAVED_MODEL`` or ``BENTO_ONNX_MODEL``, ``BENTO_WORKERS`` (1),
``BENTO_MAX_BATCH`` (64, as our ``predict_max_batch_size``), ``BENTO_MAX_LATENCY_MS`` (1000:
BentoML answers 503 to a request it expects to miss this; at 50 ms it refused requests while the
model's first calls at each batch size were slow, which ours does not do, so it gets room).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import bentoml
import numpy as np
from PIL.Image import Image

SAVED_MODEL = os.environ.get("BENTO_SAVED_MODEL", "")
ONNX_MODEL = os.environ.get("BENTO_ONNX_MODEL", "")
INPUT, OUTPUT = "image", "output_0"  # core.inference.export's SavedModel signature names


@bentoml.service(
    workers=int(os.environ.get("BENTO_WORKERS", "1")),
    resources={"cpu": str(os.cpu_count() or 1)},
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # as ours runs, with --no-access-log
)
class ResNet:
    def __init__(self) -> None:
        if ONNX_MODEL:
            self._forward, self._size = _onnx_model(ONNX_MODEL)
            return
        import tensorflow as tf

        serve = tf.saved_model.load(SAVED_MODEL).signatures["serving_default"]
        shape = serve.structured_input_signature[1][INPUT].shape
        self._size = (int(shape[2]), int(shape[1]))  # PIL's (width, height)
        self._forward = lambda batch: serve(**{INPUT: tf.constant(batch)})[OUTPUT].numpy()

    @bentoml.api(
        batchable=True,
        max_batch_size=int(os.environ.get("BENTO_MAX_BATCH", "64")),
        max_latency_ms=int(os.environ.get("BENTO_MAX_LATENCY_MS", "1000")),
    )
    def predict(self, images: list[Image]) -> list[dict[str, float | int]]:
        batch = np.stack(
            [np.asarray(i.convert("RGB").resize(self._size), np.float32) for i in images]
        )
        probabilities = self._forward(batch)
        top = probabilities.argmax(axis=1)
        return [
            {"index": int(k), "score": float(p[k])} for k, p in zip(top, probabilities, strict=True)
        ]


def _onnx_model(path: str) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[int, int]]:
    """ONNX Runtime's forward pass over the export at ``path``, and its input's (width,
    height) for PIL; ``BENTO_ONNX_THREADS`` intra-op threads (0: its own choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = int(os.environ.get("BENTO_ONNX_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]  # (batch, H, W, C)
    return (
        lambda batch: session.run(None, {image.name: batch})[0],
        (int(image.shape[2]), int(image.shape[1])),
    )
