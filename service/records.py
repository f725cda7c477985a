"""The record queries the API uses under its own names; they live in :mod:`jobs.records`.

``fail_unqueued_run``/``fail_unqueued_evaluation`` are the job lifecycle's fail-unsent (a job
recorded but never sent to the broker), kept under the names the routes import.
"""

from __future__ import annotations

from jobs.records.datasets import dataset_name_taken, find_dataset, list_datasets
from jobs.records.evaluations import fail_unsent_evaluation as fail_unqueued_evaluation
from jobs.records.runs import count_runs_by_status
from jobs.records.runs import fail_unsent_run as fail_unqueued_run

__all__ = [
    "count_runs_by_status",
    "dataset_name_taken",
    "fail_unqueued_evaluation",
    "fail_unqueued_run",
    "find_dataset",
    "list_datasets",
]
