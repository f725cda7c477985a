"""The workers' Celery app, configured from :func:`jobs.queue.celery_config`.

Start a worker (the docker compose ``worker`` service runs exactly this)::

    celery -A worker.celery_app worker -Q training --concurrency 1 --pool prefork --loglevel INFO

One training task per worker process (``--concurrency 1``): a run owns its accelerator. On a
machine with several GPUs, run one worker per GPU, each seeing only its own
(``CUDA_VISIBLE_DEVICES=0 celery -A worker.celery_app worker ...``, ``=1`` for the next, or one
compose replica per GPU with a ``device_ids`` reservation); ``docker compose up --scale worker=N``
adds workers. The task modules import TensorFlow only inside the forked pool process, on its
first task, so the worker's main process stays small and forks without TensorFlow's threads.
"""

from __future__ import annotations

import os

from celery import Celery

from jobs.queue import celery_config
from jobs.settings import get_settings

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) drowns the worker's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_celery(config: dict[str, object]) -> Celery:
    """A Celery app named ``resnet`` with this configuration and the worker's tasks."""
    app = Celery("resnet", set_as_current=False)
    app.conf.update(config)
    app.conf.include = ["worker.tasks"]
    return app


app = make_celery(celery_config(get_settings()))
