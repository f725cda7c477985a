"""The record queries the API uses under its own names; they live in :mod:`jobs.records`.

``fail_unqueued_run``/``fail_unqueued_evaluation`` are the job lifecycle's fail-unsent (a job
recorded but never sent to the broker), kept under the names the routes import.
"""

from __future__ import annotations

from jobs.records.datasets import dataset_name_taken, find_dataset, list_datasets
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS
from jobs.records.runs import count_runs_by_status

fail_unqueued_run = RUN_JOBS.fail_unsent
fail_unqueued_evaluation = EVALUATION_JOBS.fail_unsent

__all__ = [
    "count_runs_by_status",
    "dataset_name_taken",
    "fail_unqueued_evaluation",
    "fail_unqueued_run",
    "find_dataset",
    "list_datasets",
]
