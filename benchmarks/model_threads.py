"""The model call alone at small batches, with 1 or 2 compute threads (issue 11).

The predict server gives the model all cores but one; this is the ceiling its model thread has
at the batches a closed loop of clients forms (an untrained ResNet-20, 32x32x3, numpy in and
out, 3 s per batch size), on the Keras ``tf.function`` (the default) or another engine of
``core.inference.engines`` as the server builds it (``onnx``: ONNX Runtime on the export):

    python benchmarks/model_threads.py 1 && python benchmarks/model_threads.py 2
    python benchmarks/model_threads.py 1 onnx
"""

import sys
import time

import numpy as np
import tensorflow as tf

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
engine = sys.argv[2] if len(sys.argv) > 2 else "keras"
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)

from core.models import build_model  # noqa: E402 - TensorFlow's threads are set first

model = build_model("resnet20", input_shape=(32, 32, 3), num_classes=10)
if engine == "keras":
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32)],
    )
else:
    from core.inference.engines import make_engine

    forward = make_engine(model, (32, 32, 3), engine=engine, threads=threads).forward
for batch in (1, 4, 8, 16, 32):
    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)).astype(np.float32)
    for _ in range(5):
        np.asarray(forward(tf.constant(x) if engine == "keras" else x))
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < 3:
        np.asarray(forward(tf.constant(x) if engine == "keras" else x))
        calls += 1
    rate = calls * batch / (time.perf_counter() - started)
    print(f"{engine}, {threads} thread(s), batch {batch}: {rate:.0f} images/s", flush=True)
