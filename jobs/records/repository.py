"""Every function that reads or changes the records, in one namespace.

``from jobs.records import repository as records`` keeps working for the service, the worker
and the tests; the functions live by aggregate:

- :mod:`jobs.records.lifecycle`: the one job lifecycle (claim, beat, stale, reclaim, finish,
  fail-unsent) of runs and evaluations, and how a reclaim ended (:class:`ReclaimOutcome`);
- :mod:`jobs.records.runs`, :mod:`jobs.records.evaluations`: the two kinds of job;
- :mod:`jobs.records.artifacts`, :mod:`jobs.records.datasets`, :mod:`jobs.records.keys`,
  :mod:`jobs.records.registry` (model versions), :mod:`jobs.records.experiments`.

Plain functions over a :class:`~sqlalchemy.orm.Session`; the caller owns the transaction
(:func:`jobs.records.db.session_scope`).
"""

from __future__ import annotations

from jobs.records.artifacts import add_artifact, get_model_artifact
from jobs.records.datasets import dataset_name_taken, find_dataset, list_datasets, register_dataset
from jobs.records.evaluations import create_evaluation, finish_evaluation, list_evaluations
from jobs.records.experiments import (
    attach_to_experiment,
    cancel_experiment,
    create_experiment,
    finished_runs_like,
    get_experiment,
    list_experiment_runs,
    list_experiments,
)
from jobs.records.keys import (
    API_KEY_PREFIX,
    authenticate,
    create_api_key,
    hash_api_key,
    revoke_api_key,
)
from jobs.records.lifecycle import EVALUATION_JOBS, RUN_JOBS, JobLifecycle, ReclaimOutcome
from jobs.records.registry import (
    delete_model_version,
    get_model_version,
    list_model_versions,
    list_models,
    promote_run,
)
from jobs.records.runs import (
    count_runs_by_status,
    create_run,
    delete_run,
    finish_run,
    is_cancel_requested,
    list_epochs,
    list_runs,
    record_epoch,
    request_cancel,
    update_progress,
)

# The steps of the one job lifecycle (jobs.records.lifecycle), for runs and for evaluations,
# under the names their callers know. Same step, same signature and return type.
get_run, get_evaluation = RUN_JOBS.get, EVALUATION_JOBS.get
claim_run, claim_evaluation = RUN_JOBS.claim, EVALUATION_JOBS.claim
heartbeat, evaluation_heartbeat = RUN_JOBS.beat, EVALUATION_JOBS.beat
stale_run_ids, stale_evaluation_ids = RUN_JOBS.stale_ids, EVALUATION_JOBS.stale_ids
reclaim_stale_run = RUN_JOBS.reclaim_stale
reclaim_stale_evaluation = EVALUATION_JOBS.reclaim_stale
fail_unsent_run, fail_unsent_evaluation = RUN_JOBS.fail_unsent, EVALUATION_JOBS.fail_unsent

__all__ = [
    "API_KEY_PREFIX",
    "EVALUATION_JOBS",
    "RUN_JOBS",
    "JobLifecycle",
    "ReclaimOutcome",
    "add_artifact",
    "attach_to_experiment",
    "authenticate",
    "cancel_experiment",
    "claim_evaluation",
    "claim_run",
    "count_runs_by_status",
    "create_api_key",
    "create_evaluation",
    "create_experiment",
    "create_run",
    "dataset_name_taken",
    "delete_model_version",
    "delete_run",
    "evaluation_heartbeat",
    "fail_unsent_evaluation",
    "fail_unsent_run",
    "find_dataset",
    "finish_evaluation",
    "finish_run",
    "finished_runs_like",
    "get_evaluation",
    "get_experiment",
    "get_model_artifact",
    "get_model_version",
    "get_run",
    "hash_api_key",
    "heartbeat",
    "is_cancel_requested",
    "list_datasets",
    "list_epochs",
    "list_evaluations",
    "list_experiment_runs",
    "list_experiments",
    "list_model_versions",
    "list_models",
    "list_runs",
    "promote_run",
    "reclaim_stale_evaluation",
    "reclaim_stale_run",
    "record_epoch",
    "register_dataset",
    "request_cancel",
    "revoke_api_key",
    "stale_evaluation_ids",
    "stale_run_ids",
    "update_progress",
]
