"""``resnet train``: options → a ``TrainConfig``, then training with a live display.

A first Ctrl-C asks training to stop after the current batch (the run stays resumable with
``--resume``); a second one interrupts at once.
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from core.cli.output import (
    EXIT_INTERRUPTED,
    console,
    duration,
    err_console,
    fail,
    metrics_table,
    percent,
    warn,
)

if TYPE_CHECKING:
    from core.data import Dataset
    from core.training import EpochRecord, ProgressEvent, TrainConfig, TrainResult

# TrainConfig fields and the options that set them, to name the option in error messages.
_OPTION_OF_FIELD = {
    "architecture": "ARCH",
    "data": "--data",
    "preset": "--preset",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "schedule.base_lr": "--lr",
    "precision": "--precision",
    "train_limit": "--train-limit",
    "validation": "--validation",
    "seed": "--seed",
    "augment": "--augment",
}
# Fields under this section are set by --augment-param.
_AUGMENT_PARAMS = "augment_params"


def train_command(
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: model, checkpoints, history, metrics.")
    ],
    arch: Annotated[
        str | None,
        typer.Argument(
            help="Architecture, e.g. resnet20, resnet50, wrn28_10 (see `resnet archs`); "
            "optional with --resume.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="KIND:PATH, e.g. cifar10:/data/cifar-10-python.tar.gz, folder:/data/flowers, "
            "synthetic:512:32x32x3:4; optional with --resume.",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="cifar-paper, cifar-fast, imagenet-paper or coco-multilabel."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (with --resume: extend).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Base learning rate.")] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, float32, bfloat16 or float16.")
    ] = None,
    train_limit: Annotated[
        int | None, typer.Option(help="Train on a seeded random N of the training images.")
    ] = None,
    validation: Annotated[
        str | None,
        typer.Option(help="Hold out N training images (e.g. 5000) or a fraction (e.g. 0.1)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seeds weights, shuffling, augmentation.")
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(
            help="A base (none, cifar, imagenet) and policies joined with '+': randaugment or "
            "autoaugment-cifar10, cutout, mixup or cutmix; e.g. cifar+autoaugment-cifar10+cutout."
        ),
    ] = None,
    augment_param: Annotated[
        list[str] | None,
        typer.Option(
            "--augment-param",
            help="A policy's parameter as POLICY.NAME=VALUE, e.g. cutout.size=8, mixup.alpha=0.2, "
            "cutmix.prob=1, randaugment.magnitude=5; repeat for more.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")
    ] = False,
) -> None:
    """Train ARCH on --data into --out; Ctrl-C stops after the current batch (resumable)."""
    from core.training.rundir import RunDir

    rundir = RunDir(out)
    options: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "schedule.base_lr": lr,
        "precision": precision,
        "train_limit": train_limit,
        "validation": _parse_validation(validation),
        "seed": seed,
        "augment": augment,
        **_parse_augment_params(augment_param or []),
    }
    # Only the options given override the preset (resolve_config applies every value it gets).
    overrides = {path: value for path, value in options.items() if value is not None}
    if resume:
        config = _resume_config(rundir, arch, data, preset, overrides)
    else:
        if arch is None or data is None:
            fail("ARCH and --data are required (or --resume to continue the run in --out).")
        if rundir.state.exists():
            fail(
                f"{out} already holds a run (checkpoints/state.json). Continue it with "
                f"`resnet train --resume --out {out}`, or choose another --out."
            )
        config = build_config(arch, data, preset=preset, overrides=overrides)
    dataset = _load_data(config.data)
    result = run_training(config, out, dataset=dataset, resume=resume)
    if result.status == "cancelled":
        raise typer.Exit(EXIT_INTERRUPTED)


def _parse_validation(text: str | None) -> float | int | None:
    if text is None:
        return None
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        fail(f"--validation: expected a count (e.g. 5000) or a fraction (e.g. 0.1); got {text!r}.")


def _parse_augment_params(items: list[str]) -> dict[str, Any]:
    """``["cutout.size=8"]`` → ``{"augment_params.cutout.size": 8}`` (numbers as numbers)."""
    overrides: dict[str, Any] = {}
    for item in items:
        path, sep, text = item.partition("=")
        if not sep or not path.strip() or not text.strip():
            fail(f"--augment-param: expected POLICY.NAME=VALUE (e.g. cutout.size=8); got {item!r}.")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        overrides[f"{_AUGMENT_PARAMS}.{path.strip()}"] = value
    return overrides


def build_config(
    arch: str, data: str, *, preset: str | None = None, overrides: dict[str, Any]
) -> TrainConfig:
    """``resolve_config`` (the one config path, dotted-path overrides) with its errors turned
    into a clean message naming the field and its option (exit code 2)."""
    from pydantic import ValidationError

    from core.training import resolve_config

    try:
        return resolve_config(arch, data, preset=preset, overrides=overrides)
    except ValidationError as exc:
        fail(_describe_validation_error(exc))


def _describe_validation_error(exc: Any) -> str:
    lines = ["invalid training configuration:"]
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "config"
        option = _OPTION_OF_FIELD.get(field) or (
            "--augment-param" if field.startswith(f"{_AUGMENT_PARAMS}.") else None
        )
        where = f"{field} ({option})" if option else field
        message = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        suffix = f"; got {got!r}" if not isinstance(got, dict) and "got" not in message else ""
        lines.append(f"  {where}: {message}{suffix}")
    return "\n".join(lines)


def _resume_config(
    rundir: Any, arch: str | None, data: str | None, preset: str | None, overrides: dict[str, Any]
) -> TrainConfig:
    """The run's saved config; ``--epochs`` may extend it, the rest must agree or is ignored."""
    from pydantic import ValidationError

    from core.models import parse_architecture
    from core.training import TrainConfig

    if not rundir.config.is_file():
        if arch is None or data is None:
            fail(f"nothing to resume: {rundir.config} does not exist.")
        warn(f"nothing to resume in {rundir.root}: starting a new run.")
        return build_config(arch, data, preset=preset, overrides=overrides)
    try:
        saved = json.loads(rundir.config.read_text(encoding="utf-8"))
        config = TrainConfig.model_validate(saved)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        fail(f"{rundir.config}: not a readable training config: {exc}")
    try:
        if arch is not None and parse_architecture(arch).name != config.architecture:
            fail(f"--resume: {rundir.root} trains {config.architecture}, not {arch}.")
    except ValueError as exc:
        fail(str(exc))
    if data is not None and data != config.data:
        fail(f"--resume: {rundir.root} trains on {config.data}, not {data}.")
    ignored = [k for k, v in overrides.items() if v is not None and k != "epochs"]
    if preset is not None:
        ignored.append("preset")
    if ignored:
        flags = ", ".join(_OPTION_OF_FIELD.get(k, k) for k in ignored)
        warn(f"--resume continues with the saved configuration; ignoring {flags}.")
    if overrides.get("epochs") is not None:
        try:
            config = TrainConfig.model_validate({**saved, "epochs": overrides["epochs"]})
        except ValidationError as exc:
            fail(_describe_validation_error(exc))
    return config


def _load_data(source: str) -> Dataset:
    from core.data import load_dataset

    with err_console.status(f"loading {escape(source)}"):
        try:
            dataset = load_dataset(source)
        except ValueError as exc:  # DataError included
            fail(f"--data {source}: {exc}")
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    console.print(
        f"data: {escape(dataset.name)}: {dataset.num_classes} classes; {sizes} images"
        + (f"; skipped {len(dataset.skipped)} unreadable" if dataset.skipped else ""),
        highlight=False,
    )
    return dataset


def run_training(
    config: TrainConfig,
    out: Path,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    target: Console | None = None,
    show_files: bool = True,
) -> TrainResult:
    """Train with a progress bar and a line per epoch; Ctrl-C cancels after the current batch.

    Prints the result (metrics and files, or how to resume) and returns it.
    """
    from core.training import TrainHooks, train

    target = target or console
    display = _TrainDisplay(target, config.epochs)
    with _cancel_on_sigint() as interrupted, display:

        def should_cancel() -> bool:
            if interrupted.is_set() and not display.cancel_announced:
                display.announce_cancel()
            return interrupted.is_set()

        hooks = TrainHooks(
            on_epoch=display.on_epoch, on_progress=display.on_progress, should_cancel=should_cancel
        )
        result = train(config, out, hooks=hooks, dataset=dataset, resume=resume)
    _print_result(result, config, out, target, show_files=show_files)
    return result


class _TrainDisplay:
    """A bar per epoch (batches, loss, accuracy, images/s, run ETA), a line per finished epoch."""

    def __init__(self, target: Console, epochs: int) -> None:
        self.epochs = epochs
        self.cancel_announced = False
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            console=target,
            transient=True,
        )
        self.task = self.progress.add_task(
            "preparing (data, model, first step)", total=None, stats=""
        )

    def __enter__(self) -> _TrainDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_progress(self, e: ProgressEvent) -> None:
        stats = (
            f"loss {e.loss:.4f}  acc {percent(e.accuracy)}  {e.images_per_second:,.0f} img/s  "
            f"ETA {duration(e.eta_seconds)}"
        )
        self.progress.update(
            self.task,
            description=f"epoch {e.epoch}/{e.epochs}",
            total=e.batches,
            completed=e.batch,
            stats=stats,
        )

    def on_epoch(self, r: EpochRecord) -> None:
        val = (
            ""
            if r.val_accuracy is None
            else f"  val_loss {r.val_loss:.4f}  val_acc {percent(r.val_accuracy)}"
        )
        self.progress.console.print(
            f"epoch {r.epoch}/{self.epochs}  loss {r.loss:.4f}  acc {percent(r.accuracy)}{val}  "
            f"lr {r.learning_rate:.3g}  {r.seconds:.1f}s  {r.images_per_second:,.0f} img/s",
            highlight=False,
            soft_wrap=True,
        )
        last = r.epoch >= self.epochs
        # A new task rather than a reset: rich cannot turn a task back to indeterminate.
        self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            "saving and evaluating" if last else f"epoch {r.epoch + 1}/{self.epochs}",
            total=None,
            stats="",
        )

    def announce_cancel(self) -> None:
        self.cancel_announced = True
        self.progress.console.print(
            "[yellow]Ctrl-C: stopping after the current batch (Ctrl-C again to abort now)[/yellow]"
        )


@contextmanager
def _cancel_on_sigint() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C; a second one raises KeyboardInterrupt as usual.

    The handler only sets the event (printing from a signal handler can interleave with the
    progress display); the training hook notices it at the next batch.
    """
    interrupted = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, no cancel
        yield interrupted
        return
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_result(
    result: TrainResult, config: TrainConfig, out: Path, target: Console, *, show_files: bool
) -> None:
    from core.training.rundir import RunDir

    if result.status == "cancelled":
        done = result.epochs_completed
        resume_cmd = escape(f"resnet train --resume --out {shlex.quote(str(out))}")
        if done:
            target.print(
                f"[yellow]Stopped after epoch {done} of {config.epochs}[/yellow]; the checkpoint "
                f"is in {escape(str(RunDir(out).checkpoints))}.\n"
                f"Resume with: [bold]{resume_cmd}[/bold]",
                highlight=False,
                soft_wrap=True,
            )
        else:
            target.print(
                "[yellow]Stopped before the first epoch ended[/yellow]: no checkpoint yet. "
                f"`{resume_cmd}` starts it again.",
                highlight=False,
                soft_wrap=True,
            )
        return
    target.print(
        f"[green]Done[/green]: {result.epochs_completed} epoch(s) in {duration(result.seconds)} "
        f"({result.dtype_policy}).",
        highlight=False,
    )
    if result.metrics:
        target.print(metrics_table(result.metrics, title=f"{result.metrics.get('split')} metrics"))
    else:
        target.print("No test or validation split: no metrics (see --validation).")
    if not show_files:
        return
    from core.training.rundir import CHECKPOINTS_DIR, RESULT_FILES

    present = [name for name in RESULT_FILES if (out / name).exists()]
    target.print(
        f"Files in {escape(str(out))}: {', '.join(present)}, {CHECKPOINTS_DIR}/",
        highlight=False,
        soft_wrap=True,
    )
