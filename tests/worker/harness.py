"""Helpers for the worker tests: real Celery worker processes and the stacks they serve.

A worker is started exactly as the compose ``worker`` service starts it, as a separate process
in its own process group, with ``RESNET_*`` variables pointing at the test's servers; every
worker a test starts is killed (its whole group) when the test or module ends.

A *stack* is one deployment: a database of its own at the head migration, a broker (a Redis
database number of its own, or a filesystem queue) and a sender app, so that the stale-run
sweepers of two stacks never see each other's runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from jobs.launcher import child_environment
from jobs.queue import EVALUATE_TASK, TRAIN_TASK, celery_config
from jobs.records import (
    Artifact,
    EpochMetric,
    Run,
    make_engine,
    make_sessionmaker,
    session_scope,
    upgrade_to_head,
)
from jobs.records.repository import (
    create_evaluation,
    create_run,
    get_evaluation,
    get_run,
    list_epochs,
)
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 1.0
STALE_AFTER_S = 4.0
WORKER_START_TIMEOUT_S = 60.0
# A fresh pool process imports TensorFlow on its first run (~5-15 s on a busy 2-core machine).
RUN_TIMEOUT_S = 150.0
TEMPLATE_DB = "worker_tests_at_head"

T = TypeVar("T")

_redis_db = itertools.count()


def next_redis_db() -> int:
    """A Redis database number (1-15, 0 left alone) for the next stack of this session."""
    return 1 + next(_redis_db) % 15


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A run of a few seconds: ResNet-8 on 256 synthetic 16x16 images, 3 classes, 3 epochs.

    A quarter is held out for validation, so the run ends with validation metrics. Plain data
    (the worker validates it with ``TrainConfig``): the test process never imports TensorFlow.
    """
    config: dict[str, Any] = {
        "architecture": "resnet8",
        "data": "synthetic:256:16x16x3:3",
        "epochs": 3,
        "batch_size": 32,
        "precision": "float32",
        "validation": 0.25,
        "schedule": {"kind": "constant", "base_lr": 0.05},
        "progress_every": 1,
    }
    config.update(overrides)
    return config


def celery_command() -> list[str]:
    """``celery`` from this interpreter's environment."""
    script = Path(sys.executable).parent / "celery"
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


WORKER_ARGS = ["-A", "worker.celery_app", "worker", "-Q", "training"]
WORKER_ARGS += ["--concurrency", "1", "--pool", "prefork", "--loglevel", "INFO"]


class WorkerProcess:
    """``celery -A worker.celery_app worker …`` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                celery_command() + WORKER_ARGS,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(
            lambda: " ready." in self.log() or self._exited(),
            timeout=WORKER_START_TIMEOUT_S,
            what="the worker to be ready",
            details=self.log,
        )
        assert self.proc.poll() is None, f"the worker exited while starting:\n{self.log()}"
        return self

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is this worker or one of its pool processes (same process group)."""
        try:
            return os.getpgid(pid) == self.pid
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """``kill -9`` the whole worker: main process and pool processes."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then kill the group whatever happened."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()  # the pool processes too, should one have outlived its parent


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    details: Callable[[], str] | None = None,
    interval: float = 0.2,
) -> T:
    """Poll until ``predicate`` returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n--- worker log (tail) ---\n{details()[-6000:]}" if details else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


@dataclass
class Stack:
    """One deployment under test: settings, its database, a sender, and its workers."""

    settings: Settings
    sessions: sessionmaker[Session]
    sender: Celery
    workdir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self) -> WorkerProcess:
        log_path = self.workdir / f"worker-{len(self.workers) + 1}.log"
        worker = WorkerProcess(child_environment(self.settings), log_path)
        self.workers.append(worker)
        return worker.start()

    def logs(self) -> str:
        return "\n".join(f"=== {w.log_path.name}\n{w.log()[-4000:]}" for w in self.workers)

    def submit(self, config: dict[str, Any], *, max_attempts: int = 3) -> str:
        """Create a queued run, commit, then enqueue it (as the API does)."""
        with session_scope(self.sessions) as session:
            run = create_run(
                session,
                architecture=config["architecture"],
                dataset=config["data"],
                config=config,
                max_attempts=max_attempts,
            )
            run_id = run.id
        self.send(run_id)
        return run_id

    def send(self, run_id: str) -> None:
        self.sender.send_task(TRAIN_TASK, kwargs={"run_id": run_id})

    def evaluate(self, run_id: str, split: str) -> str:
        with session_scope(self.sessions) as session:
            evaluation_id = create_evaluation(session, run_id=run_id, split=split).id
        self.sender.send_task(EVALUATE_TASK, kwargs={"evaluation_id": evaluation_id})
        return evaluation_id

    def run(self, run_id: str) -> Run:
        with session_scope(self.sessions) as session:
            return get_run(session, run_id)

    def epochs(self, run_id: str) -> list[EpochMetric]:
        with session_scope(self.sessions) as session:
            return list_epochs(session, run_id)

    def artifacts(self, run_id: str) -> list[Artifact]:
        with session_scope(self.sessions) as session:
            return list(get_run(session, run_id).artifacts)

    def evaluation(self, evaluation_id: str) -> Any:
        with session_scope(self.sessions) as session:
            return get_evaluation(session, evaluation_id)

    def wait_run(
        self,
        run_id: str,
        until: Callable[[Run], bool],
        *,
        what: str,
        timeout: float = RUN_TIMEOUT_S,
        seen: list[str] | None = None,
    ) -> Run:
        """Poll the run until ``until(run)``; note each new status in ``seen``."""

        def check() -> Run | None:
            run = self.run(run_id)
            if seen is not None and (not seen or seen[-1] != run.status.value):
                seen.append(run.status.value)
            return run if until(run) else None

        return wait_for(check, timeout=timeout, what=f"run {run_id} {what}", details=self.logs)

    def wait_finished(self, run_id: str, **kwargs: Any) -> Run:
        return self.wait_run(run_id, lambda r: r.status.terminal, what="to finish", **kwargs)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=5)
        self.sessions.kw["bind"].dispose()


def sender_app(settings: Settings) -> Celery:
    """A Celery app that only sends, configured as the API's would be."""
    app = Celery("tests-sender", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def stack_settings(**kwargs: Any) -> Settings:
    """Settings with a 1 s heartbeat and runs counted dead after 4 s without one."""
    return Settings(heartbeat_seconds=HEARTBEAT_S, stale_after_seconds=STALE_AFTER_S, **kwargs)


@contextlib.contextmanager
def embedded_stack_context(workdir: Path, **overrides: Any) -> Iterator[Stack]:
    """The embedded default (SQLite and a filesystem queue under ``workdir/state``)."""
    settings = stack_settings(state_dir=workdir / "state", **overrides)
    settings.state_dir.mkdir(parents=True)
    upgrade_to_head(settings.db_url)
    engine = make_engine(settings.db_url)
    stack = Stack(settings, make_sessionmaker(engine), sender_app(settings), workdir)
    try:
        yield stack
    finally:
        stack.close()
