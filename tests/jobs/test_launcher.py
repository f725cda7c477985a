"""``python -m jobs.launcher`` (what ``resnet serve`` runs): migrations, the admin key, and the
supervision of a real Celery worker and a uvicorn process on the embedded default.

The API itself is being written elsewhere; until it exists these tests give uvicorn a minimal
stand-in app (:mod:`tests.jobs.asgi_stand_in`) and check the launcher, not the routes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.records import Scope, make_engine, make_sessionmaker, session_scope
from jobs.records.repository import authenticate
from tests.fixtures.servers import free_port
from tests.worker.harness import ROOT, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

STAND_IN = "tests.jobs.asgi_stand_in:create_app"
SECRET = re.compile(r"\b(rsk_[A-Za-z0-9_-]{43})\b")


class Launcher:
    """``python -m jobs.launcher`` in its own process group, its output collected."""

    def __init__(self, state_dir: Path, *args: str, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_")}
        env["RESNET_STATE_DIR"] = str(state_dir)
        env.update({f"RESNET_{name.upper()}": value for name, value in settings.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.launcher", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_output(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        return wait_for(
            lambda: re.search(pattern, self.output),
            timeout=timeout,
            what=f"{pattern!r} in the launcher's output",
            details=lambda: self.output,
        )

    def child_pid(self, name: str) -> int:
        return int(self.wait_output(rf"started the {name} \(pid (\d+)\)").group(1))

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the launcher did not exit within {timeout} s:\n{self.output[-4000:]}")
        self._reader.join(timeout=10)
        return code

    def close(self) -> None:
        """Kill whatever is left: the launcher and its children (each in its own group)."""
        pids = [int(p) for p in re.findall(r"started the \w+ \(pid (\d+)\)", self.output)]
        for pgid in [self.proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def launchers() -> list[Launcher]:
    started: list[Launcher] = []
    yield started  # type: ignore[misc]
    for launcher in started:
        launcher.close()


def test_serve_prints_a_key_once_and_stops_its_children_on_ctrl_c(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    state = tmp_path / "state"
    port = free_port()
    args = ("--host", "127.0.0.1", "--port", str(port), "--app", STAND_IN)
    first = Launcher(state, *args)
    launchers.append(first)
    first.wait_output(rf"ready: http://127\.0\.0\.1:{port}")
    secret = first.wait_output(SECRET.pattern).group(1)
    worker, api = first.child_pid("worker"), first.child_pid("api")
    first.wait_output(r"celery@\S+ ready\.")  # the worker's own log, passed through

    engine = make_engine(f"sqlite:///{state / 'resnet.db'}")
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            key = authenticate(session, secret)
            assert key is not None and key.has_scope(Scope.ADMIN)
    finally:
        engine.dispose()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert response.status == 200
    assert (state / "broker" / "out").is_dir() and (state / "runs").is_dir()

    first.proc.send_signal(signal.SIGINT)
    assert first.wait_exit() == 0, first.output[-4000:]
    assert "stopped" in first.output
    assert _gone(worker) and _gone(api)

    # The state survives: the key is not made again, and SIGTERM stops it as well.
    second = Launcher(state, *args)
    launchers.append(second)
    second.wait_output(rf"ready: http://127\.0\.0\.1:{port}")
    assert "already exists" in second.output
    assert not SECRET.search(second.output)
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait_exit() == 0, second.output[-4000:]


def test_serve_stops_the_worker_and_fails_when_the_api_dies(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    port = free_port()
    broken = "tests.jobs.asgi_stand_in:no_such_factory"
    launcher = Launcher(tmp_path / "state", "--port", str(port), "--app", broken)
    launchers.append(launcher)
    worker = launcher.child_pid("worker")
    started = time.monotonic()
    code = launcher.wait_exit(timeout=90)
    assert code != 0
    assert re.search(r"the api exited \(code \d+\); stopping the others", launcher.output)
    assert _gone(worker), f"the worker outlived the launcher:\n{launcher.output[-4000:]}"
    assert time.monotonic() - started < 60


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (read from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may hold spaces and parentheses: the fields follow the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def _api(port: int, secret: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _epochs_done(port: int, secret: str, run_id: str) -> list[int]:
    epochs = _api(port, secret, "GET", f"/v1/runs/{run_id}/epochs")
    return [row["epoch"] for row in epochs["items"]]


@pytest.mark.timeout(420)
def test_stopping_ends_a_busy_worker_within_the_timeout_and_the_run_resumes(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    """Issue 9, finding 13: SIGTERM while the worker trains ends every child within the stop
    timeout (warm, then cold, then SIGKILL to the group), and the run finishes after a restart
    with each epoch exactly once."""
    state, port = tmp_path / "state", free_port()
    args = ("--host", "127.0.0.1", "--port", str(port))
    quick = {"stop_timeout_seconds": "2", "heartbeat_seconds": "1", "stale_after_seconds": "5"}
    first = Launcher(state, *args, **quick)
    launchers.append(first)
    first.wait_output(rf"ready: http://127\.0\.0\.1:{port}", timeout=120)
    secret = first.wait_output(SECRET.pattern).group(1)
    worker = first.child_pid("worker")
    config = {
        "architecture": "resnet8",
        "data": "synthetic:12000:16x16x3:2",  # epochs of several seconds: SIGTERM finds one going
        "epochs": 3,
        "batch_size": 64,
        "precision": "float32",
    }
    run_id = _api(port, secret, "POST", "/v1/runs", config)["id"]
    wait_for(
        lambda: _epochs_done(port, secret, run_id),
        timeout=180,
        what="a first epoch",
        details=lambda: first.output[-4000:],
    )
    assert len(_group_members(worker)) >= 2  # the Celery main process and its pool process

    asked = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait_exit(timeout=60) == 0, first.output[-4000:]
    # Warm for 2 s, then cold shutdown; SIGKILL only if that took longer than its grace.
    assert time.monotonic() - asked < 2 + 15 + 10, first.output[-3000:]
    assert "did not end within 2 s" in first.output
    assert _group_members(worker) == [], "a worker process outlived the launcher"
    assert _api_down(port)

    second = Launcher(state, *args, **quick)
    launchers.append(second)
    second.wait_output(rf"ready: http://127\.0\.0\.1:{port}", timeout=120)
    wait_for(
        lambda: _api(port, secret, "GET", f"/v1/runs/{run_id}")["status"] == "succeeded",
        timeout=240,
        what="the interrupted run to finish after the restart",
        details=lambda: second.output[-4000:],
    )
    assert _epochs_done(port, secret, run_id) == [1, 2, 3]


def test_a_killed_launcher_leaves_no_worker_training(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    """``kill -9`` of the launcher: the worker gets Celery's cold shutdown (not a warm one that
    would wait for the whole training), so its process group is gone within seconds."""
    state, port = tmp_path / "state", free_port()
    launcher = Launcher(state, "--host", "127.0.0.1", "--port", str(port))
    launchers.append(launcher)
    launcher.wait_output(rf"ready: http://127\.0\.0\.1:{port}", timeout=120)
    secret = launcher.wait_output(SECRET.pattern).group(1)
    worker = launcher.child_pid("worker")
    config = {"architecture": "resnet8", "data": "synthetic:4096:16x16x3:2", "epochs": 50}
    run_id = _api(port, secret, "POST", "/v1/runs", config)["id"]
    wait_for(
        lambda: _api(port, secret, "GET", f"/v1/runs/{run_id}")["status"] == "running",
        timeout=180,
        what="the run to start",
    )
    launcher.proc.kill()
    launcher.proc.wait(timeout=10)
    wait_for(
        lambda: _group_members(worker) == [],
        timeout=45,
        what="the worker's processes to end after the launcher was killed",
        details=lambda: _describe(_group_members(worker)),
    )


def _describe(pids: list[int]) -> str:
    """Each live process of a group: its pid, state and command line (for a failure message)."""
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            lines.append(f"{pid} {state} {command[:200]}")
    return "\n".join(lines)


def _api_down(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except OSError:
        return True
    return False
