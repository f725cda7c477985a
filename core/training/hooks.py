"""What a caller of :func:`core.training.train` sees while a run goes: epochs, progress, cancel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The numbers recorded for every finished epoch, in this order: the one declaration the run
# history, the epoch records, the API's epoch schema and the reports' epoch rows follow (the
# ORM and pydantic classes keep their own typed fields; tests pin them equal to this).
EPOCH_METRICS: tuple[str, ...] = tuple(f.name for f in fields(EpochRecord) if f.name != "epoch")


@dataclass(frozen=True)
class ProgressEvent:
    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based, within the epoch
    batches: int
    loss: float
    accuracy: float
    images_per_second: float
    eta_seconds: float  # for the whole run

    @property
    def fraction(self) -> float:
        """Progress through the epoch, 0..1."""
        return self.batch / self.batches


@dataclass
class TrainHooks:
    """Optional callbacks; each is called on the training thread, so keep them quick."""

    on_epoch: Callable[[EpochRecord], None] | None = None
    on_progress: Callable[[ProgressEvent], None] | None = None
    should_cancel: Callable[[], bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
