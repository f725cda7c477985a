"""Run the embedded deployment in one command: records, an admin key, the API and a worker.

``resnet serve`` (and ``python -m jobs.launcher``) calls :func:`serve`: it creates the state
folder, brings the database to the newest migration, makes an admin API key if there is none
(printed once), then starts two child processes with the same ``RESNET_*`` settings:

- a Celery worker: ``celery -A worker.celery_app worker -Q training --concurrency 1 --pool
  prefork --loglevel INFO`` (the command of the docker compose ``worker`` service);
- the API: ``uvicorn service.app:create_app --factory --host HOST --port PORT``.

With the defaults that is SQLite (WAL) and kombu's filesystem queue under ``state_dir``: nothing
else to install or start. Core does not import the service or the worker: they are started by
command, as separate processes.

Ctrl-C (or SIGTERM) stops both: the API at once, the worker after its current task but within
``RESNET_STOP_TIMEOUT_SECONDS`` (then Celery's cold shutdown, then SIGKILL to its whole process
group, pool processes included); a second Ctrl-C stops the worker at once. An interrupted run is
picked up again, from its last checkpoint, when the service next starts. If the launcher itself
dies (even by ``kill -9``), the worker gets Celery's cold-shutdown signal and the API SIGTERM:
no child outlives it for long. If either child exits on its own, the other is stopped and
:func:`serve` returns non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sqlalchemy import make_url, select

from jobs.queue import TRAINING_QUEUE
from jobs.records import ApiKey, Scope, make_engine, make_sessionmaker, session_scope
from jobs.records import upgrade_to_head as _upgrade_to_head
from jobs.records.repository import create_api_key
from jobs.settings import Settings, get_settings
from jobs.storage import is_url

API_APP = "service.app:create_app"
# After a stop request: how long a child may take before it is asked more firmly.
STOP_GRACE_S = 15.0
POLL_S = 0.2


def worker_command(settings: Settings) -> list[str]:
    """The Celery worker, as the compose ``worker`` service runs it (this interpreter's)."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", TRAINING_QUEUE,
        "--concurrency", str(settings.worker_concurrency),
        "--pool", "prefork",
        "--loglevel", "INFO",
    ]  # fmt: skip


def api_command(*, host: str, port: int, app: str = API_APP) -> list[str]:
    """The API under uvicorn, as the compose ``api`` service runs it."""
    return [
        sys.executable, "-m", "uvicorn", app, "--factory",
        "--host", host, "--port", str(port),
    ]  # fmt: skip


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` written out as ``RESNET_*`` variables.

    The children read their settings from the environment; writing the resolved object out
    means a ``Settings`` built in code (CLI options) reaches them too. Unset options are
    removed, so that the children fall back to the same defaults.
    """
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        key = f"RESNET_{name.upper()}"
        if value is None:
            env.pop(key, None)
        elif name == "state_dir":
            env[key] = str(Path(value).resolve())
        else:
            env[key] = str(value)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"  # their logs interleave with ours as they happen
    return env


def prepare_state(settings: Settings) -> None:
    """Create the folders the embedded deployment writes to."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not is_url(settings.artifacts):
        Path(settings.artifacts).mkdir(parents=True, exist_ok=True)
    if settings.embedded_broker:
        for sub in ("out", "processed", "control"):
            (settings.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def ensure_admin_key(db_url: str) -> str | None:
    """Create an ``admin`` key unless an unrevoked admin key exists.

    Returns:
        The new key's secret (it is stored hashed and cannot be shown again), or ``None``.
    """
    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            keys = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))).all()
            if any(key.has_scope(Scope.ADMIN) for key in keys):
                return None
            _, secret = create_api_key(session, "admin", [Scope.ADMIN])
            return secret
    finally:
        engine.dispose()


@dataclass
class _Child:
    name: str
    command: list[str]
    # What the child gets when the launcher dies. The worker gets Celery's cold shutdown: a warm
    # one would wait for a training that may last days, orphaned.
    on_parent_death: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None
    signals_sent: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, env: dict[str, str]) -> None:
        # Its own process group: a Ctrl-C in the terminal reaches only us, and we decide what
        # each child gets (a second SIGINT would make Celery drop its running task at once).
        self.proc = subprocess.Popen(
            self.command,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # Only sets a prctl flag: safe between fork and exec.
            preexec_fn=functools.partial(_die_with_parent, self.on_parent_death),
        )

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signals_sent.append(sig)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill_group(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def _die_with_parent(sig: int) -> None:
    """Linux: the child gets ``sig`` if the launcher dies (even by ``kill -9``)."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, int(sig))


def _say(message: str) -> None:
    print(f"[resnet serve] {message}", flush=True)


def _port_open(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=0.2):
            return True
    except OSError:
        return False


class _Supervisor:
    """Starts the children, relays stop requests to them, and stops all when one exits."""

    def __init__(self, children: Sequence[_Child], *, stop_timeout_s: float) -> None:
        self.children = list(children)
        self.stop_requests = 0
        self.stop_timeout_s = stop_timeout_s
        self._stop_requested = threading.Event()
        self._escalate_at: float | None = None  # when a stop in progress gets firmer

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        self.stop_requests += 1
        self._stop_requested.set()
        worker = self._child("worker")
        if self.stop_requests == 1:
            _say(
                "stopping: the API now, the worker after its current task or within "
                f"{self.stop_timeout_s:g} s (Ctrl-C again to stop it at once; an interrupted run "
                "resumes from its last checkpoint next time)"
            )
            self._escalate_at = time.monotonic() + self.stop_timeout_s
            for child in self.children:
                child.signal(signal.SIGTERM)
        elif self.stop_requests == 2:
            _say("stopping the worker at once")
            if worker is not None:
                worker.signal(signal.SIGQUIT)  # Celery's cold shutdown
            for child in self.children:
                if child is not worker:
                    child.signal(signal.SIGTERM)
            self._escalate_at = time.monotonic() + STOP_GRACE_S
        else:
            _say("killing the children")
            for child in self.children:
                child.kill_group()

    def _child(self, name: str) -> _Child | None:
        return next((c for c in self.children if c.name == name), None)

    def stop_all(self) -> None:
        """Stop every child still running: SIGTERM, then Celery's cold shutdown, then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGKILL):
            running = [c for c in self.children if c.poll() is None]
            if not running:
                return
            for child in running:
                if sig == signal.SIGKILL:
                    child.kill_group()
                elif sig == signal.SIGTERM or child.name == "worker":
                    child.signal(sig)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and any(c.poll() is None for c in running):
                time.sleep(POLL_S)

    def _escalate_if_overdue(self) -> None:
        """A stop that takes too long gets firmer: cold shutdown, then SIGKILL to the groups."""
        if self._escalate_at is None or time.monotonic() < self._escalate_at:
            return
        if self.stop_requests == 1:
            _say(
                f"the worker's current task did not end within {self.stop_timeout_s:g} s: "
                "stopping it at once (its run resumes from its last checkpoint next time)"
            )
        self.request_stop(signal.SIGTERM)

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of each child's process group (a pool process whose parent has
        gone would otherwise go on training, orphaned)."""
        for child in self.children:
            child.kill_group()

    def wait(self, *, host: str, port: int, url: str) -> int:
        announced = False
        while True:
            exited = [c for c in self.children if c.poll() is not None]
            if self._stop_requested.is_set():
                if len(exited) == len(self.children):
                    _say("stopped")
                    return 0
                self._escalate_if_overdue()
            elif exited:
                child = exited[0]
                code = child.poll()
                _say(f"the {child.name} exited (code {code}); stopping the others")
                self.stop_all()
                return code if code else 1
            if not announced and not self._stop_requested.is_set() and _port_open(host, port):
                announced = True
                _say(f"ready: {url} (OpenAPI docs at {url}/docs); Ctrl-C to stop")
            time.sleep(POLL_S)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    app: str = API_APP,
) -> int:
    """Run the API and a worker on ``settings`` until interrupted or one of them exits.

    Args:
        settings: The deployment's settings; the children get them as ``RESNET_*`` variables.
        host: Where the API listens (default ``settings.host``).
        port: Its port (default ``settings.port``).
        app: The API's ASGI app factory, as uvicorn imports it.

    Returns:
        The exit status: 0 after a requested stop, non-zero when a child exited on its own.
    """
    host = host or settings.host
    port = port or settings.port
    prepare_state(settings)
    database = make_url(settings.db_url).render_as_string(hide_password=True)
    broker = (
        f"filesystem queue in {settings.broker_folder}"
        if settings.embedded_broker
        else make_url(settings.broker).render_as_string(hide_password=True)
    )
    _say(f"state: {settings.state_dir.resolve()}")
    _say(f"database: {database}")
    _say(f"queue: {broker}")
    _say(f"artifacts: {settings.artifacts}; data root: {settings.data_dir}")
    _say("applying database migrations")
    _upgrade_to_head(settings.db_url)
    secret = ensure_admin_key(settings.db_url)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if secret is not None:
        _say("created an admin API key; it is shown only this once, keep it:")
        print(f"\n    {secret}\n", flush=True)
        _say(f'use it as a Bearer token: curl -H "Authorization: Bearer {secret}" {url}/v1/runs')
    else:
        _say(
            "an admin API key already exists (its secret was shown when it was created); "
            "create another with `python -m service.keys create NAME --scope admin`"
        )

    env = child_environment(settings)
    supervisor = _Supervisor(
        [
            _Child("worker", worker_command(settings), on_parent_death=signal.SIGQUIT),
            _Child("api", api_command(host=host, port=port, app=app)),
        ],
        stop_timeout_s=settings.stop_timeout_seconds,
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main_thread:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, supervisor.request_stop)
    try:
        for child in supervisor.children:
            child.start(env)
            _say(f"started the {child.name} (pid {child.pid}): {' '.join(child.command[2:])}")
        _say(f"API at {url} once it is up")
        return supervisor.wait(host=host, port=port, url=url)
    finally:
        supervisor.stop_all()
        supervisor.kill_leftovers()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jobs.launcher [--host H] [--port P]``; the rest comes from ``RESNET_*``."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs.launcher",
        description="Run the API and a Celery worker on the embedded default (SQLite, no Redis) "
        "or on the RESNET_* settings.",
    )
    parser.add_argument("--host", default=None, help="listen address (default RESNET_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (default RESNET_PORT)")
    parser.add_argument("--app", default=API_APP, help=f"ASGI app factory (default {API_APP})")
    args = parser.parse_args(argv)
    return serve(get_settings(), host=args.host, port=args.port, app=args.app)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
