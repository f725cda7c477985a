"""Prediction metrics, registered in the app's own Prometheus registry.

Labelled by run id (what a loaded model is; several names or versions may share one), a
bounded label set: at most the runs ever loaded by this process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip


class PredictMetrics:
    """Batch sizes, queue and compute time, images, refusals, and the model cache."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_size = Histogram(
            "resnet_predict_batch_size",
            "Images per model call of the dynamic batcher.",
            ["run"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "resnet_predict_queue_seconds",
            "Time an image waited in the batcher's queue before its model call started.",
            ["run"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.compute_seconds = Histogram(
            "resnet_predict_compute_seconds",
            "Duration of one batched model call.",
            ["run"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.decode_seconds = Histogram(
            "resnet_predict_decode_seconds",
            "Decoding and resizing the images of one request (in the decode threads).",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.images = Counter(
            "resnet_predict_images_total", "Images predicted.", ["run"], registry=registry
        )
        self.refused = Counter(
            "resnet_predict_refused_total",
            "Predict requests refused: overloaded (503), timeout (504), bad_image (4xx).",
            ["reason"],
            registry=registry,
        )
        self.loads = Counter(
            "resnet_model_loads_total", "Models loaded into the cache.", registry=registry
        )
        self.evictions = Counter(
            "resnet_model_evictions_total",
            "Models evicted from the cache (least recently used, over the memory cap).",
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "resnet_model_cache_bytes",
            "Weight bytes of the models held in the cache.",
            registry=registry,
        )
