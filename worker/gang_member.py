"""One worker's share of a multi-worker run, in a fresh interpreter (``python -m
worker.gang_member SPEC``), started and watched by :mod:`worker.gang`.

Why a process of its own: tf.distribute configures collective ops once, when TensorFlow's
runtime starts, so a process can train at most one multi-worker run, and never after other
TensorFlow work; the Celery pool process lives on for the next task. And the gang is stopped
by killing these processes: a worker waiting at an all-reduce for a peer that died cannot be
interrupted any other way.

The chief (slot 0) trains into the run's folder and records what a one-worker run records:
each epoch (fenced by the run's attempt), progress, the outcome with the artifacts. The others
train into a scratch folder and write nothing to the records. Every member resumes from the
chief's latest checkpoint (the run folder is on storage every worker reads, or is fetched from
a URL artifact root).

The spec is JSON: ``run_id``, ``slot``, ``cluster`` (``host:port`` by slot), ``attempt`` (the
run's), ``scratch_dir`` and ``result_file``, where a failure's ``"Type: message"`` is written
for the parent to record. The process ends with ``os._exit``: TensorFlow's coordination
service would otherwise hold it ~30 s at exit, waiting for its peers to shut down.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jobs.records import RunStatus, session_scope
from jobs.records.lifecycle import RUN_JOBS
from jobs.records.runs import finish_run
from jobs.settings import Settings, get_settings
from worker.artifacts import ArtifactStore
from worker.data import load_data, weights_path
from worker.lifecycle import JobHeartbeat
from worker.runtime import describe_error, sessions
from worker.training import RunMonitor, record_success

log = logging.getLogger("worker.gang_member")

PARENT_CHECK_S = 0.5


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s: %(levelname)s/gang-member] %(message)s"
    )
    spec: dict[str, Any] = json.loads(argv[1])
    _exit_with_parent()
    try:
        outcome = train_member(spec, settings=get_settings())
    except BaseException as exc:
        log.exception("run %s slot %s: failed", spec["run_id"], spec["slot"])
        Path(spec["result_file"]).write_text(describe_error(exc))
        return 1
    log.info("run %s slot %s: %s", spec["run_id"], spec["slot"], outcome)
    return 0


def train_member(spec: dict[str, Any], *, settings: Settings) -> str:
    """Train this slot's share; the chief records the outcome. Returns what happened."""
    from core.training import TrainConfig
    from core.training.multiworker import Cluster, train_multiworker

    run_id, slot, attempt = spec["run_id"], int(spec["slot"]), int(spec["attempt"])
    db = sessions(settings.db_url)
    with session_scope(db) as session:
        config_data = dict(RUN_JOBS.get(session, run_id).config)
    config = TrainConfig.model_validate(config_data)
    if config.init_from is not None:
        config = config.model_copy(
            update={"init_from": str(weights_path(config.init_from, settings))}
        )
    store = ArtifactStore.from_settings(settings)
    if store.pull_checkpoint(run_id):  # a URL root: the chief's checkpoint, fetched here
        log.info("run %s: fetched its last checkpoint from %s", run_id, store.run_uri(run_id))
    cluster = Cluster(tuple(spec["cluster"]), slot)
    chief = cluster.chief
    # Not entered: the parent beats the run; the monitor only needs the fence and the flag.
    heartbeat = JobHeartbeat(
        db, RUN_JOBS, run_id, attempt=attempt, interval_s=settings.heartbeat_seconds
    )
    monitor = RunMonitor(
        db,
        run_id,
        heartbeat=heartbeat,
        after_epoch=lambda: store.push_checkpoint(run_id),
        retry_for_s=settings.stale_after_seconds,
    )
    result = train_multiworker(
        config,
        store.workdir(run_id),
        cluster=cluster,
        scratch_dir=None if chief else spec["scratch_dir"],
        hooks=monitor.hooks() if chief else None,
        dataset=lambda: load_data(config.data, settings),
        resume=True,
    )
    if not chief:
        return result.status
    if heartbeat.lost.is_set():
        return "lost"
    if result.status == "cancelled":
        note = f"cancelled on request after {result.epochs_completed} epoch(s)"
        with session_scope(db) as session:
            finish_run(session, run_id, status=RunStatus.CANCELLED, error=note, attempt=attempt)
        return "cancelled"
    files = store.publish(run_id)
    if not record_success(db, run_id, attempt, result, files):
        return "lost"
    store.discard_staging(run_id)
    return "succeeded"


def _exit_with_parent() -> None:
    """End this process when the task that started it dies (its worker killed, OOM): a member
    left training alone would hold its peers at the next all-reduce."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
