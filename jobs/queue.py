"""Celery configuration as plain data, shared by the API (which only sends) and the workers.

Kept free of Celery imports so that core stays a library; `worker.celery_app` and the service's
sender both build their Celery app from :func:`celery_config`.
"""

from __future__ import annotations

from typing import Any

from jobs.settings import Settings

TRAIN_TASK = "worker.train_run"
EVALUATE_TASK = "worker.evaluate_run"
SWEEP_TASK = "worker.requeue_stale_runs"
TRAINING_QUEUE = "training"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings for long training jobs that must survive a worker dying mid-run."""
    config: dict[str, Any] = {
        "broker_url": settings.broker,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": TRAINING_QUEUE,
        "task_routes": {
            TRAIN_TASK: {"queue": TRAINING_QUEUE},
            EVALUATE_TASK: {"queue": TRAINING_QUEUE},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if settings.embedded_broker:
        folder = settings.broker_folder
        for sub in ("out", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "out"),
            "data_folder_out": str(folder / "out"),
            "data_folder_processed": str(folder / "processed"),
            "store_processed": False,
            # Broadcasts (e.g. `celery inspect`) would otherwise land in ./control.
            "control_folder": str(folder / "control"),
        }
    else:
        # The broker must not hand a running job to a second worker while the first still
        # trains: the visibility timeout exceeds the longest run. Dead workers are noticed
        # sooner, by their run's heartbeat (see worker.tasks).
        config["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout_seconds,
        }
    return config
