"""Faults with real processes (issue 9): the broker, the database or the artifact disk goes away
in the middle of a run. Whatever happens, the run ends ``succeeded`` or ``failed`` with a clear
error (never stuck ``running`` or ``queued``), no epoch row is lost or written twice, and no
half-written model is recorded.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.records import ArtifactKind, RunStatus, make_engine, make_sessionmaker
from tests.fixtures.servers import PostgresServer, RedisServer, throwaway_redis
from tests.worker.harness import Stack, sender_app, stack_settings, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Epochs of a few seconds each: long enough that a fault lands inside the run.
LONGER = tiny_config(data="synthetic:3072:16x16x3:3", epochs=5, batch_size=64)


def epoch_numbers(stack: Stack, run_id: str) -> list[int]:
    return [row.epoch for row in stack.epochs(run_id)]


def wait_for_epoch(stack: Stack, run_id: str, epoch: int = 1) -> None:
    stack.wait_run(
        run_id, lambda _: len(epoch_numbers(stack, run_id)) >= epoch, what=f"epoch {epoch}"
    )


def assert_whole(stack: Stack, run_id: str, epochs: int) -> None:
    """Succeeded, each epoch once, and its model recorded."""
    run = stack.wait_finished(run_id, timeout=300)
    assert run.status == RunStatus.SUCCEEDED, (run.error, stack.logs()[-3000:])
    assert epoch_numbers(stack, run_id) == list(range(1, epochs + 1))
    models = [a for a in stack.artifacts(run_id) if a.kind == ArtifactKind.MODEL]
    assert len(models) == 1 and Path(models[0].uri).is_file()


@contextlib.contextmanager
def production_stack(
    postgres_server: PostgresServer, redis: RedisServer, template: str, workdir: Path
) -> Iterator[Stack]:
    name = f"faults_{uuid.uuid4().hex[:12]}"
    db_url = postgres_server.create_database(name, template=template)
    settings = stack_settings(
        state_dir=workdir / "state", database_url=db_url, broker_url=redis.url
    )
    stack = Stack(settings, make_sessionmaker(make_engine(db_url)), sender_app(settings), workdir)
    try:
        yield stack
    finally:
        stack.close()
        if not postgres_server.running:
            postgres_server.start()
        postgres_server.drop_database(name)


def test_redis_stopped_and_restarted_mid_run(
    postgres_server: PostgresServer, pg_template: str, tmp_path: Path
) -> None:
    """Production's Redis (append-only file) restarts while a run trains: the run goes on and
    ends whole, and a run queued behind it is not lost."""
    with (
        throwaway_redis(persistent=True) as redis,
        production_stack(postgres_server, redis, pg_template, tmp_path) as stack,
    ):
        stack.start_worker()
        first = stack.submit(LONGER)
        second = stack.submit(tiny_config())
        wait_for_epoch(stack, first)
        redis.stop()
        time.sleep(5)  # the worker's connection errors and retries meanwhile
        redis.start()
        assert_whole(stack, first, LONGER["epochs"])
        assert_whole(stack, second, 3)


def test_postgres_restarted_mid_run(
    postgres_server: PostgresServer, pg_template: str, tmp_path: Path
) -> None:
    """The database goes away for a few seconds while a run trains (heartbeats and an epoch's
    row fail meanwhile): the run ends whole, each epoch recorded once."""
    with (
        throwaway_redis() as redis,
        production_stack(postgres_server, redis, pg_template, tmp_path) as stack,
    ):
        stack.start_worker()
        run_id = stack.submit(LONGER)
        wait_for_epoch(stack, run_id)
        postgres_server.stop()
        time.sleep(6)
        postgres_server.start()
        run = stack.wait_finished(run_id, timeout=300)
        # Either outcome is allowed, but not a half one: a success is whole; a failure says why.
        if run.status == RunStatus.SUCCEEDED:
            assert_whole(stack, run_id, LONGER["epochs"])
        else:
            assert run.status == RunStatus.FAILED and run.error, stack.logs()[-3000:]
            numbers = epoch_numbers(stack, run_id)
            assert numbers == list(range(1, len(numbers) + 1))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: room for a few checkpoints of ResNet-8, not for many."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_artifact_disk_full_at_a_checkpoint_fails_the_run_clearly(
    postgres_server: PostgresServer, pg_template: str, tmp_path: Path, small_disk: Path
) -> None:
    """The artifact disk fills up: the run fails naming the full disk, its recorded epochs are
    each there once, and no model is recorded; the worker takes the next run."""
    with (
        throwaway_redis() as redis,
        production_stack(postgres_server, redis, pg_template, tmp_path) as stack,
    ):
        stack.settings = stack.settings.model_copy(update={"artifact_root": str(small_disk)})
        stack.start_worker()
        # Wider than ResNet-8: its checkpoints and model do not fit in 3 MiB.
        run_id = stack.submit(tiny_config(architecture="resnet20", epochs=3))
        run = stack.wait_finished(run_id, timeout=300)
        assert run.status == RunStatus.FAILED, stack.logs()[-3000:]
        assert run.error and "No space left on device" in run.error, run.error
        numbers = epoch_numbers(stack, run_id)
        assert numbers == list(range(1, len(numbers) + 1))
        assert not [a for a in stack.artifacts(run_id) if a.kind == ArtifactKind.MODEL]


def test_a_message_lost_from_the_embedded_queue_is_sent_again(embedded_stack: Stack) -> None:
    """A queued run whose message file vanished (a cleaned folder, a lost disk) is not left
    queued for ever: the sweeper notices the broker holds no message for it and sends one."""
    run_id = embedded_stack.submit(tiny_config())
    out = embedded_stack.settings.broker_folder / "out"
    messages = list(out.glob("*.msg"))
    assert len(messages) == 1
    messages[0].unlink()
    embedded_stack.start_worker()
    assert_whole(embedded_stack, run_id, 3)
    assert "its message is gone" in embedded_stack.logs()


def test_runs_queued_in_a_redis_that_lost_its_data_are_sent_again(
    postgres_server: PostgresServer, pg_template: str, tmp_path: Path
) -> None:
    """A Redis without its append-only file crashes while a run trains and two wait: the
    training run ends whole, and the two whose messages went with Redis's memory are sent again
    and run."""
    with (
        throwaway_redis() as redis,
        production_stack(postgres_server, redis, pg_template, tmp_path) as stack,
    ):
        stack.start_worker()
        first = stack.submit(LONGER)
        waiting = [stack.submit(tiny_config(epochs=2)) for _ in range(2)]
        wait_for_epoch(stack, first)
        redis.kill()
        redis.start()
        assert_whole(stack, first, LONGER["epochs"])
        for run_id in waiting:
            assert_whole(stack, run_id, 2)
