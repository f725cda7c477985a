"""A worker's main process ends within seconds of starting to exit, whatever billiard waits on.

Why: Celery's cold shutdown (what the worker gets when ``resnet serve`` dies, even by ``kill -9``)
kills the pool process mid-task. If it dies holding the lock of the pool's result queue, the
main process then blocks for ever in billiard's exit finalizer (``Pool._terminate_pool`` puts a
sentinel on that queue and waits for the lock), with its sweeper thread still running: an
orphaned worker that never exits. Seen under load in
``tests/jobs/test_launcher.py::test_a_killed_launcher_leaves_no_worker_training``.

So the exit is bounded from the moment it is sure to happen: when a cold shutdown begins
(Celery's ``worker_shutting_down`` with ``how="Cold"``) and when a warm one has finished its
task (``worker_shutdown``), :func:`bound_exit` starts a timer; if the process still runs
:data:`EXIT_GRACE_S` later, it ends at once with ``os._exit``. A warm shutdown is not cut short:
its wait for the running task comes before ``worker_shutdown``. Nothing is lost: by then the
pool has stopped, and a run cut by a cold shutdown resumes from its last checkpoint on another
worker, as after any crash.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

EXIT_GRACE_S = 15.0
_started = False


def bound_exit(grace_s: float = EXIT_GRACE_S) -> None:
    """End this process ``grace_s`` seconds from now unless it has ended (once per process)."""
    global _started
    if _started:
        return
    _started = True

    def force_exit() -> None:
        time.sleep(grace_s)
        log.warning("still exiting after %.0f s (a pool lock held by a killed process?): "
                    "ending the process now", grace_s)  # fmt: skip
        sys.stderr.flush()
        os._exit(1)

    threading.Thread(target=force_exit, name="exit-guard", daemon=True).start()
