"""Input pipeline throughput on the CIFAR-10 JPEG archive (training, CIFAR augmentation).

The pipeline must never be the bottleneck: it should deliver well over 3x the model's training
rate (about 900 images/s on the reference machine). Prints one JSON object.

    .venv/bin/python benchmarks/input_pipeline.py [--source folder:/path.tar.gz] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from core.data import decode, load_dataset, make_pipeline

DEFAULT_SOURCE = "folder:/work/shared/datasets/cifar10-jpeg.tar.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the first")
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream the files (tf.data decode + cache) instead "
        "of decoding them into memory up front, as for large images",
    )
    args = parser.parse_args()
    if args.stream:
        decode.SMALL_IMAGE_PIXELS = 0

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        t0 = time.perf_counter()
        ds = load_dataset(args.source, cache_dir=cache_dir)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = load_dataset(args.source, cache_dir=cache_dir)
        reload_s = time.perf_counter() - t0
        train = ds.splits["train"]
        shape = train.image_shape or (32, 32, 3)
        pipe = make_pipeline(
            train, batch_size=args.batch_size, training=True, image_shape=shape, augment="cifar"
        )

        def epoch() -> tuple[int, float]:
            t = time.perf_counter()
            n = sum(int(x.shape[0]) for x, _ in pipe)
            return n, time.perf_counter() - t

        first_n, first_s = epoch()
        timed = [epoch() for _ in range(args.epochs)]
    images = sum(n for n, _ in timed)
    seconds = sum(s for _, s in timed)
    print(
        json.dumps(
            {
                "source": args.source,
                "train_images": len(train),
                "skipped": len(ds.skipped),
                "storage": "memory" if train.images is not None else "streamed",
                "load_seconds": round(load_s, 2),
                "reload_seconds_archive_cached": round(reload_s, 2),
                "first_epoch_seconds": round(first_s, 2),
                "first_epoch_images_per_s": round(first_n / first_s),
                "epochs_timed": args.epochs,
                "images_per_s": round(images / seconds),
                "batch_size": args.batch_size,
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
