"""The Keras callback that times epochs, validates, checkpoints, reports progress and cancels."""

from __future__ import annotations

import logging
import time
from typing import Any

import keras

from core.training.hooks import EpochRecord, ProgressEvent, TrainHooks
from core.training.random_state import random_states
from core.training.rundir import CHECKPOINT_GLOB, RunDir, write_json

log = logging.getLogger(__name__)


class RunCallback(keras.callbacks.Callback):
    """One per run. Epoch numbers in records are 1-based; Keras' are 0-based."""

    def __init__(
        self,
        *,
        rundir: RunDir,
        hooks: TrainHooks,
        history: list[EpochRecord],
        config_dump: dict[str, Any],
        epochs: int,
        batches_per_epoch: int,
        n_train: int,
        batch_size: int,
        val_data: Any = None,
        progress_every: int = 20,
        keep_epoch_checkpoints: bool = False,
    ) -> None:
        super().__init__()
        self.rundir = rundir
        self.hooks = hooks
        self.history = history
        self.config_dump = config_dump
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.n_train = n_train
        self.batch_size = batch_size
        self.val_data = val_data
        self.progress_every = progress_every
        self.keep_epoch_checkpoints = keep_epoch_checkpoints
        self.cancelled = False
        self._epoch_start = 0.0
        self._recent_epoch_seconds: float | None = None
        self._last_reported = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()
        self._last_reported = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.hooks.should_cancel is not None and self.hooks.should_cancel():
            self.cancelled = True
            self.model.stop_training = True
            return
        done = batch + 1  # Keras passes the last step of each execution (steps_per_execution)
        if self.hooks.on_progress is None or (
            done - self._last_reported < self.progress_every and done != self.batches_per_epoch
        ):
            return
        self._last_reported = done
        logs = logs or {}
        elapsed = time.perf_counter() - self._epoch_start
        seen = min(done * self.batch_size, self.n_train)
        rate = seen / elapsed if elapsed > 0 else 0.0
        epoch = self._current_epoch()
        # The rest of this epoch at this epoch's pace; later epochs at the last full epoch's.
        per_batch = elapsed / done
        epoch_seconds = self._recent_epoch_seconds or per_batch * self.batches_per_epoch
        eta = per_batch * (self.batches_per_epoch - done) + epoch_seconds * (self.epochs - epoch)
        self.hooks.on_progress(
            ProgressEvent(
                epoch=epoch,
                epochs=self.epochs,
                batch=done,
                batches=self.batches_per_epoch,
                loss=float(logs.get("loss", float("nan"))),
                accuracy=float(logs.get("accuracy", logs.get("binary_accuracy", float("nan")))),
                images_per_second=rate,
                eta_seconds=eta,
            )
        )

    def _current_epoch(self) -> int:
        return len(self.history) + 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.cancelled:
            return  # a partial epoch is neither recorded nor checkpointed
        seconds = time.perf_counter() - self._epoch_start
        self._recent_epoch_seconds = seconds
        logs = logs or {}
        val_loss = val_acc = None
        if self.val_data is not None:
            val = self.model.evaluate(self.val_data, verbose=0, return_dict=True)
            val_loss = float(val["loss"])
            val_acc = float(val.get("accuracy", val.get("binary_accuracy", float("nan"))))
        record = EpochRecord(
            epoch=epoch + 1,
            loss=float(logs.get("loss", float("nan"))),
            accuracy=float(logs.get("accuracy", logs.get("binary_accuracy", float("nan")))),
            val_loss=val_loss,
            val_accuracy=val_acc,
            learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            seconds=seconds,
            images_per_second=self.n_train / seconds if seconds > 0 else 0.0,
        )
        self.history.append(record)
        self._checkpoint(record.epoch)
        log.info(
            "epoch %d/%d loss %.4f acc %.4f val_acc %s %.1fs %.0f img/s",
            record.epoch,
            self.epochs,
            record.loss,
            record.accuracy,
            "-" if val_acc is None else f"{val_acc:.4f}",
            seconds,
            record.images_per_second,
        )
        if self.hooks.on_epoch is not None:
            self.hooks.on_epoch(record)

    def _checkpoint(self, epoch: int) -> None:
        """Model and optimizer to a new file, then the state that points at it, then cleanup.

        The state file changes only after its checkpoint is complete, so a crash at any moment
        leaves a consistent (checkpoint, epoch, history) triple to resume from.
        """
        path = self.rundir.checkpoint_for(epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.keras")
        self.model.save(tmp)
        tmp.replace(path)
        history = [r.to_dict() for r in self.history]
        write_json(
            self.rundir.state,
            {
                "epoch": epoch,
                "checkpoint": path.name,
                "random_states": random_states(self.model),
                "config": self.config_dump,
                "history": history,
            },
        )
        write_json(self.rundir.history, history)
        if not self.keep_epoch_checkpoints:
            for old in self.rundir.checkpoints.glob(CHECKPOINT_GLOB):
                if old != path:
                    old.unlink(missing_ok=True)
