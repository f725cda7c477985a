"""Whole deployments as separate processes, for end-to-end tests and the queue-latency benchmark.

- :func:`production_stack`: PostgreSQL and Redis (throwaway servers), then the compose file's
  own commands: the one-shot migration, the API under uvicorn and a Celery worker.
- :func:`embedded_stack`: ``resnet serve`` (SQLite, filesystem queue), as the README runs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_command(service: str, **options: str) -> list[str]:
    """The command a compose service runs, with some ``--option value`` pairs replaced."""
    cmd = [
        str(BIN / c) if (BIN / c).exists() else c for c in COMPOSE["services"][service]["command"]
    ]
    if cmd[0] == "python":
        cmd[0] = sys.executable
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        cmd[cmd.index(flag) + 1] = value
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            value = check()
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Stack:
    url: str
    key: str
    data_root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path = Path(".")

    def start(self, name: str, cmd: list[str]) -> None:
        self.commands[name] = cmd
        self.processes[name], self.logs[name] = _start(name, cmd, self.env, self.workdir)

    def kill(self, name: str) -> None:
        """kill -9 the whole process group, as a lost machine or an OOM kill would."""
        proc = self.processes[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.start(name, self.commands[name])

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
        )

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {n}\n{p.read_text(errors='replace')[-chars:]}"
            for n, p in self.logs.items()
            if p.exists()
        )


def _start(name: str, cmd: list[str], env: dict[str, str], logdir: Path) -> tuple[Any, Path]:
    log = logdir / f"{name}.log"
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=logdir,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_")}
    env.update(values, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return env


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200


@contextlib.contextmanager
def production_stack(database_url: str, broker_url: str, workdir: Path) -> Iterator[Stack]:
    """Migrate, then API and worker as the compose services run them, on PostgreSQL + Redis."""
    data_root = workdir / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    env = _environment(
        RESNET_DATABASE_URL=database_url,
        RESNET_BROKER_URL=broker_url,
        RESNET_DATA_ROOT=str(data_root),
        RESNET_ARTIFACT_ROOT=str(workdir / "artifacts"),
        RESNET_STATE_DIR=str(workdir / "state"),
        RESNET_HEARTBEAT_SECONDS="1",
        RESNET_STALE_AFTER_SECONDS="6",
    )
    subprocess.run(compose_command("migrate"), env=env, cwd=workdir, check=True, timeout=120)
    key = subprocess.run(
        [sys.executable, "-m", "service.keys", "create", "e2e", "--scope", "admin"],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    port = free_port()
    stack = Stack(
        url=f"http://127.0.0.1:{port}", key=key, data_root=data_root, env=env, workdir=workdir
    )
    try:
        stack.start("worker", compose_command("worker"))
        stack.start("api", compose_command("api", host="127.0.0.1", port=str(port)))
        try:
            wait_for(lambda: _ready(stack.url), timeout=90, what="the API's /readyz")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{stack.log_tail()}") from None
        yield stack
    finally:
        _stop(stack.processes)


@contextlib.contextmanager
def embedded_stack(workdir: Path) -> Iterator[Stack]:
    """``resnet serve``: migrations, API and worker on SQLite and a filesystem queue."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _environment(
        RESNET_STATE_DIR=str(workdir / "var"),
        RESNET_PORT=str(port),
        RESNET_HEARTBEAT_SECONDS="1",
        RESNET_STALE_AFTER_SECONDS="6",
    )
    proc, log = _start("serve", [str(BIN / "resnet"), "serve"], env, workdir)
    stack = Stack(
        url=f"http://127.0.0.1:{port}",
        key="",
        data_root=workdir / "var" / "data",
        processes={"serve": proc},
        logs={"serve": log},
    )
    try:
        match = wait_for(
            lambda: re.search(r"rsk_[A-Za-z0-9_-]{20,}", log.read_text()),
            timeout=90,
            what="the admin key in resnet serve's output",
        )
        stack.key = match.group(0)
        wait_for(lambda: _ready(stack.url), timeout=90, what="the API's /readyz")
        yield stack
    finally:
        _stop(stack.processes)


def write_image_folder(
    root: Path, *, classes: int = 3, per_class: int = 60, size: int = 16
) -> None:
    """Class folders of PNGs whose class shows in their colour, so a tiny net can learn them."""
    rng = np.random.default_rng(0)
    palette = rng.integers(30, 226, (classes, 3))
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            noise = rng.normal(0, 25, (size, size, 3))
            pixels = np.clip(palette[c] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
