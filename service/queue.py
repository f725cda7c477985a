"""The API's side of the job queue: send tasks by name, and check the broker is reachable.

The API never imports the worker's task modules (they import TensorFlow); it builds a sending-only
Celery app from the same :func:`jobs.queue.celery_config` the workers use and enqueues by task
name. Callers send only after the row the task names is committed (a task re-reads its run).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from jobs.queue import EVALUATE_TASK, TRAIN_TASK, celery_config
from jobs.settings import Settings

log = logging.getLogger(__name__)

# A broker that is down should fail a request in well under a second, not hang it: one quick
# retry for a blip, then the caller records the failure.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0.0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
BROKER_CHECK_TIMEOUT_S = 2.0


class EnqueueError(RuntimeError):
    """The broker did not take the message."""


class TaskQueue:
    """Sends training and evaluation tasks to the workers' queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = celery_config(settings)
        self.celery = Celery("resnet-api", set_as_current=False)
        self.celery.conf.update(config)

    def enqueue_run(self, run_id: str) -> None:
        """Queue ``worker.train_run(run_id=...)``.

        Raises:
            EnqueueError: The broker is unreachable or refused the message.
        """
        self._send(TRAIN_TASK, {"run_id": run_id})

    def enqueue_evaluation(self, evaluation_id: str) -> None:
        """Queue ``worker.evaluate_run(evaluation_id=...)``.

        Raises:
            EnqueueError: The broker is unreachable or refused the message.
        """
        self._send(EVALUATE_TASK, {"evaluation_id": evaluation_id})

    def _send(self, task: str, kwargs: dict[str, Any]) -> None:
        try:
            self.celery.send_task(
                task, kwargs=kwargs, retry=True, retry_policy=PUBLISH_RETRY_POLICY
            )
        except Exception as exc:  # kombu/redis/OS errors all mean "not queued"
            log.warning("could not send %s %s: %s", task, kwargs, exc)
            raise EnqueueError(f"{type(exc).__name__}: {exc}") from exc

    def check(self, timeout: float = BROKER_CHECK_TIMEOUT_S) -> None:
        """Raise if the broker cannot be reached within ``timeout`` seconds.

        Redis is pinged directly (redis-py's own retries would otherwise stretch a refused
        connection to seconds); the embedded filesystem queue must be a writable folder; any
        other broker gets one kombu connection attempt.
        """
        url = self.settings.broker
        if self.settings.embedded_broker:
            _check_folder(self.settings)
        elif url.startswith(("redis://", "rediss://", "unix://")):
            _check_redis(url, timeout)
        else:
            with self.celery.connection_for_write(connect_timeout=timeout) as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)

    def close(self) -> None:
        self.celery.close()


def _check_folder(settings: Settings) -> None:
    import os

    folder = settings.broker_folder / "out"
    if not folder.is_dir():
        raise OSError(f"the queue folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OSError(f"the queue folder {folder} is not writable")


def _check_redis(url: str, timeout: float) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    finally:
        client.close()
