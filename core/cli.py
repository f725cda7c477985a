"""The library's command line: list architectures, train, evaluate, predict and benchmark.

The installed ``resnet`` command is this app plus the service's commands (``jobs.cli``:
``serve``, and ``predict --server``).

Every command is a thin shell over the library (``core.models``, ``core.training``, ...): it
parses options, shows progress and prints results, as a table or, with ``--json``, as JSON on
stdout (progress then goes to stderr). TensorFlow is imported only by the commands that need it,
so ``resnet --help`` and a cached ``resnet archs`` answer at once.

Exit codes: 0 success; 1 some inputs failed (``predict``); 2 invalid options, configuration,
data or model; 130 interrupted (a cancelled ``train`` can be resumed with ``--resume``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import core

if TYPE_CHECKING:
    from core.data import Dataset
    from core.training import EpochRecord, ProgressEvent, TrainConfig, TrainResult

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) drowns the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger(__name__)

app = typer.Typer(
    help="Train, evaluate and serve ResNet image classifiers (He et al. 2016).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Measure throughput on synthetic data.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# Rich resolves sys.stdout/sys.stderr at each write, so test runners that swap them still see
# the output of these module-level consoles.
console = Console()
err_console = Console(stderr=True)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# TrainConfig fields and the options that set them, to name the option in error messages.
_OPTION_OF_FIELD = {
    "architecture": "ARCH",
    "data": "--data",
    "preset": "--preset",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "schedule.base_lr": "--lr",
    "schedule": "--lr",
    "precision": "--precision",
    "train_limit": "--train-limit",
    "validation": "--validation",
    "seed": "--seed",
}


# --------------------------------------------------------------------------- app-wide options


def _version(value: bool) -> None:
    if not value:
        return
    versions = []
    for package in ("keras", "tensorflow"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    typer.echo(f"resnet-service {core.__version__} ({', '.join(versions)})")
    raise typer.Exit()


_log_handler: RichHandler | None = None


def configure_logging(verbose: bool) -> None:
    """Log ``core.*`` through rich on stderr: warnings, or with ``verbose`` INFO as well."""
    global _log_handler
    logger = logging.getLogger("core")
    if _log_handler is None:
        _log_handler = RichHandler(console=err_console, show_path=False, markup=False)
        logger.addHandler(_log_handler)
    # The handler filters; the logger's own level is only raised, so a library user's (or a
    # test's) more verbose setting survives a call of the CLI in the same process.
    _log_handler.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print versions, exit."),
    ] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log core.* at INFO.")] = False,
) -> None:
    """Train, evaluate and serve ResNet image classifiers (He et al. 2016)."""
    configure_logging(verbose)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def _warn(message: str) -> None:
    err_console.print(
        f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True
    )


def _echo_json(data: Any) -> None:
    from core.training.rundir import jsonable

    typer.echo(json.dumps(data, indent=2, default=jsonable))


# --------------------------------------------------------------------------- number formats


def human_count(n: float) -> str:
    """``40_551_040`` → ``"41M"``, ``4_089_184_256`` → ``"4.1G"`` (two significant digits)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"
    return f"{n:g}"


def human_params(n: int) -> str:
    """Parameters in millions, as the paper writes them: ``0.27M``, ``1.7M``, ``25.6M``."""
    value = n / 1e6
    return f"{value:.2f}M" if value < 1 else f"{value:.1f}M"


def _percent(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _seconds(s: float) -> str:
    s = max(0, round(s))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


# --------------------------------------------------------------------------- archs


@app.command()
def archs(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Only these architectures (any valid name); default: the catalogue."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Recompute cached entries.")] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="RESNET_CACHE_DIR",
            help="Where the computed catalogue is cached [default: ~/.cache/resnet-service].",
        ),
    ] = None,
) -> None:
    """List architectures: family, depth, parameters, FLOPs and the paper's error.

    Counts are computed once (building each net; ResNet-1202 takes seconds) and cached.
    FLOPs are multiply-adds per image at 32×32 (CIFAR nets, 10 classes) or 224×224 (ImageNet
    nets, 1000 classes); the paper error is CIFAR-10 test error or ImageNet top-1 (10-crop).
    """
    from core.catalogue import catalogue

    with _LazyProgress(err_console if json_out else console, "building") as progress:
        try:
            entries = catalogue(
                names=names or None, refresh=refresh, cache_dir=cache_dir, on_entry=progress.step
            )
        except ValueError as exc:
            _fail(str(exc))
    if json_out:
        _echo_json(entries)
        return
    table = Table(title="ResNet architectures", title_justify="left")
    for column in ("name", "family", "kind", "depth", "params", "FLOPs", "paper error"):
        table.add_column(
            column, justify="left" if column in ("name", "family", "kind") else "right"
        )
    for e in entries:
        error = "-" if e["paper_error"] is None else f"{e['paper_error']:.2f}%"
        table.add_row(
            e["name"], e["family"], e["kind"], str(e["depth"]),
            human_params(e["params"]), human_count(e["flops"]), error,
        )  # fmt: skip
    console.print(table)
    console.print(
        "FLOPs: multiply-adds per image. Paper error: CIFAR-10 test error, or ImageNet top-1 "
        "validation error (10-crop).",
        style="dim",
        highlight=False,
    )


class _LazyProgress:
    """A progress bar that appears only if there is work: the first ``step`` call starts it."""

    def __init__(self, target: Console, verb: str) -> None:
        self.verb = verb
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=target,
            transient=True,
        )
        self.task: Any = None

    def step(self, name: str, done: int, total: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.verb, total=total)
        self.progress.update(self.task, completed=done, description=f"{self.verb} {name}")

    def __enter__(self) -> _LazyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()


# --------------------------------------------------------------------------- train


@app.command("train")
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
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")
    ] = False,
) -> None:
    """Train ARCH on --data into --out; Ctrl-C stops after the current batch (resumable)."""
    from core.training.rundir import RunDir

    rundir = RunDir(out)
    overrides: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "schedule": {"base_lr": lr} if lr is not None else None,
        "precision": precision,
        "train_limit": train_limit,
        "validation": _parse_validation(validation),
        "seed": seed,
    }
    if resume:
        config = _resume_config(rundir, arch, data, preset, overrides)
    else:
        if arch is None or data is None:
            _fail("ARCH and --data are required (or --resume to continue the run in --out).")
        if rundir.state.exists():
            _fail(
                f"{out} already holds a run (checkpoints/state.json). Continue it with "
                f"`resnet train --resume --out {out}`, or choose another --out."
            )
        config = build_config(arch, data, preset=preset, **overrides)
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
        _fail(f"--validation: expected a count (e.g. 5000) or a fraction (e.g. 0.1); got {text!r}.")


def build_config(
    arch: str, data: str, *, preset: str | None = None, **overrides: Any
) -> TrainConfig:
    """``make_config`` with errors turned into a clean message naming the field (exit code 2)."""
    from pydantic import ValidationError

    from core.models import parse_architecture
    from core.training import make_config

    try:
        parse_architecture(arch)  # its message lists the valid names
        return make_config(arch, data, preset=preset, **overrides)
    except ValidationError as exc:
        _fail(_describe_validation_error(exc))
    except ValueError as exc:
        _fail(str(exc))


def _describe_validation_error(exc: Any) -> str:
    lines = ["invalid training configuration:"]
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "config"
        option = _OPTION_OF_FIELD.get(field)
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
            _fail(f"nothing to resume: {rundir.config} does not exist.")
        _warn(f"nothing to resume in {rundir.root}: starting a new run.")
        return build_config(arch, data, preset=preset, **overrides)
    try:
        saved = json.loads(rundir.config.read_text(encoding="utf-8"))
        config = TrainConfig.model_validate(saved)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        _fail(f"{rundir.config}: not a readable training config: {exc}")
    try:
        if arch is not None and parse_architecture(arch).name != config.architecture:
            _fail(f"--resume: {rundir.root} trains {config.architecture}, not {arch}.")
    except ValueError as exc:
        _fail(str(exc))
    if data is not None and data != config.data:
        _fail(f"--resume: {rundir.root} trains on {config.data}, not {data}.")
    ignored = [k for k, v in overrides.items() if v is not None and k != "epochs"]
    if preset is not None:
        ignored.append("preset")
    if ignored:
        flags = ", ".join(_OPTION_OF_FIELD.get(k, k) for k in ignored)
        _warn(f"--resume continues with the saved configuration; ignoring {flags}.")
    if overrides["epochs"] is not None:
        try:
            config = TrainConfig.model_validate({**saved, "epochs": overrides["epochs"]})
        except ValidationError as exc:
            _fail(_describe_validation_error(exc))
    return config


def _load_data(source: str) -> Dataset:
    from core.data import load_dataset

    with err_console.status(f"loading {escape(source)}"):
        try:
            dataset = load_dataset(source)
        except ValueError as exc:  # DataError included
            _fail(f"--data {source}: {exc}")
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
            f"loss {e.loss:.4f}  acc {_percent(e.accuracy)}  {e.images_per_second:,.0f} img/s  "
            f"ETA {_seconds(e.eta_seconds)}"
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
            else f"  val_loss {r.val_loss:.4f}  val_acc {_percent(r.val_accuracy)}"
        )
        self.progress.console.print(
            f"epoch {r.epoch}/{self.epochs}  loss {r.loss:.4f}  acc {_percent(r.accuracy)}{val}  "
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
    if result.status == "cancelled":
        done = result.epochs_completed
        resume_cmd = escape(f"resnet train --resume --out {shlex.quote(str(out))}")
        if done:
            target.print(
                f"[yellow]Stopped after epoch {done} of {config.epochs}[/yellow]; the checkpoint "
                f"is in {escape(str(out / 'checkpoints'))}.\n"
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
        f"[green]Done[/green]: {result.epochs_completed} epoch(s) in {_seconds(result.seconds)} "
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

    present = [f for f in RESULT_FILES if (out / f).exists()]
    target.print(
        f"Files in {escape(str(out))}: {', '.join(present)}, {CHECKPOINTS_DIR}/",
        highlight=False,
        soft_wrap=True,
    )


def metrics_table(metrics: dict[str, Any], *, title: str | None = None) -> Table:
    """The headline numbers of a metrics dict (single- or multi-label) as a two-column table."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: Sequence[tuple[str, str]] = (
        ("n", "images"),
        ("accuracy", "accuracy"),
        ("error_percent", "error"),
        ("top5_accuracy", "top-5 accuracy"),
        ("precision_macro", "precision (macro)"),
        ("recall_macro", "recall (macro)"),
        ("f1_macro", "F1 (macro)"),
        ("mAP", "mAP"),
        ("CP", "CP"),
        ("CR", "CR"),
        ("CF1", "CF1"),
        ("OP", "OP"),
        ("OR", "OR"),
        ("OF1", "OF1"),
        ("loss", "loss"),
        ("images_per_second", "images/s"),
    )
    for key, label in rows:
        if key not in metrics or metrics[key] is None:
            continue
        value = metrics[key]
        if key == "n":
            text = str(value)
        elif key == "error_percent":
            text = f"{value:.2f}%"
        elif key == "loss":
            text = f"{value:.4f}"
        elif key == "images_per_second":
            text = f"{value:,.0f}"
        else:
            text = _percent(value)
        table.add_row(label, text)
    return table


# --------------------------------------------------------------------------- evaluate / predict


def _load_predictor(path: Path) -> Any:
    """A :class:`core.inference.Predictor` for a ``.keras`` file or a run folder."""
    from core.inference import ModelLoadError, Predictor
    from core.training.rundir import MODEL_FILE

    model_path = path / MODEL_FILE if path.is_dir() else path
    with err_console.status(f"loading {escape(str(model_path))}"):
        try:
            return Predictor.load(model_path)
        except ModelLoadError as exc:
            _fail(str(exc))


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A .keras model, or a run folder holding one.")],
    data: Annotated[str, typer.Option("--data", help="KIND:PATH of the data to score.")],
    split: Annotated[str, typer.Option(help="Which split of the data.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    json_out: Annotated[
        bool, typer.Option("--json", help="All metrics as JSON on stdout.")
    ] = False,
    save_predictions: Annotated[
        Path | None,
        typer.Option(
            help="Also write every image's probabilities here (.npz); `resnet rescore` reads it."
        ),
    ] = None,
) -> None:
    """Score a trained model on a data split: accuracy, error, precision/recall/F1."""
    from core.data import load_dataset, make_pipeline
    from core.evaluation import score_dataset

    predictor = _load_predictor(model)
    try:
        dataset = load_dataset(data)
    except ValueError as exc:
        _fail(f"--data {data}: {exc}")
    if split not in dataset.splits:
        _fail(f"--split: {data} has no {split!r} split; it has {', '.join(dataset.splits)}.")
    if dataset.num_classes != predictor.num_classes:
        _fail(
            f"the model has {predictor.num_classes} outputs but {data} has "
            f"{dataset.num_classes} classes."
        )
    if dataset.multi_label != predictor.multi_label:
        _fail(
            f"the model is {'multi' if predictor.multi_label else 'single'}-label; the data is not."
        )
    if list(dataset.class_names) != list(predictor.class_names):
        _warn(
            "the data's class names differ from the model's labels; scoring by class index "
            f"(data: {dataset.class_names[:5]}…, model: {predictor.class_names[:5]}…)."
        )
    images = dataset.splits[split]
    ds = make_pipeline(
        images, batch_size=batch_size, training=False, image_shape=predictor.input_shape
    )
    target = err_console if json_out else console
    with target.status(f"evaluating on {len(images)} {split} images"):
        metrics, predictions = score_dataset(
            predictor.model,
            ds,
            class_names=predictor.class_names,
            multi_label=predictor.multi_label,
            ids=images.names,
        )
    metrics["split"] = split
    if save_predictions is not None:
        try:
            predictions.save(save_predictions)
        except OSError as exc:
            _fail(f"--save-predictions {save_predictions}: {exc.strerror or exc}", EXIT_FAILED)
        _warn(f"predictions of {len(predictions)} images written to {save_predictions}")
    _show_metrics(f"{model} on {data} ({split})", metrics, json_out=json_out)


@app.command()
def rescore(
    predictions: Annotated[
        Path, typer.Argument(help="A predictions file (.npz) from evaluate or the service.")
    ],
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Multi-label decision threshold.")
    ] = 0.5,
    json_out: Annotated[
        bool, typer.Option("--json", help="All metrics as JSON on stdout.")
    ] = False,
) -> None:
    """Recompute an evaluation's metrics from its stored predictions, without the model."""
    from core.evaluation import Predictions, PredictionsError

    if not predictions.is_file():
        _fail(f"{predictions}: not found.")
    try:
        kept = Predictions.load(predictions)
    except PredictionsError as exc:
        _fail(f"{predictions}: {exc}")
    metrics = kept.score(threshold=threshold)
    if kept.multi_label:
        metrics["threshold"] = threshold
    _show_metrics(f"{predictions} ({len(kept)} images)", metrics, json_out=json_out)


def _show_metrics(title: str, metrics: dict[str, Any], *, json_out: bool) -> None:
    if json_out:
        _echo_json(metrics)
        return
    console.print(f"{escape(title)}:", highlight=False, soft_wrap=True)
    console.print(metrics_table(metrics))
    per_class = metrics.get("per_class") or []
    if 0 < len(per_class) <= 20:
        table = Table(title="per class", title_justify="left")
        for column in ("class", "precision", "recall", "F1", "support"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for row in per_class:
            table.add_row(
                escape(str(row["class"])), _percent(row["precision"]), _percent(row["recall"]),
                _percent(row["f1"]), str(row["support"]),
            )  # fmt: skip
        console.print(table)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A .keras model, or a run folder holding one.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, ...).")],
    top_k: Annotated[int, typer.Option(min=1, help="Most probable classes per image.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Classify images; an unreadable image is reported by name and the rest still predicted."""
    show_predictions(predict_local(model, images, top_k), json_out=json_out)


def show_predictions(results: list[dict[str, Any]], *, json_out: bool) -> None:
    """Print each image's top-k (or its error); exit 1 if any image could not be read."""
    errors = [r for r in results if "error" in r]
    if json_out:
        _echo_json(results)
    else:
        for r in results:
            if "error" in r:
                err_console.print(
                    f"[red]{escape(r['image'])}: {escape(r['error'])}[/red]", highlight=False
                )
                continue
            console.print(f"[bold]{escape(r['image'])}[/bold]", highlight=False)
            for rank, p in enumerate(r["predictions"], 1):
                console.print(
                    f"  {rank}. {escape(p['label']):<24} {100 * p['probability']:6.2f}%",
                    highlight=False,
                )
    if errors:
        _warn(f"{len(errors)} of {len(results)} image(s) could not be read.")
        raise typer.Exit(EXIT_FAILED)


def predict_local(model: Path, images: list[Path], top_k: int) -> list[dict[str, Any]]:
    from core.images import ImageDecodeError, decode_image

    predictor = _load_predictor(model)
    decoded: dict[int, Any] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(images):
        try:
            decoded[i] = decode_image(path.read_bytes(), channels=predictor.channels)
        except (OSError, ImageDecodeError) as exc:
            errors[i] = str(exc)
    order = sorted(decoded)
    predictions = predictor.predict_arrays([decoded[i] for i in order], top_k) if order else []
    by_index = dict(zip(order, predictions, strict=True))
    results: list[dict[str, Any]] = []
    for i, path in enumerate(images):
        if i in errors:
            results.append({"image": str(path), "error": errors[i]})
        else:
            results.append({"image": str(path), "predictions": by_index[i]})
    return results


# --------------------------------------------------------------------------- bench


@bench_app.command("train")
def bench_train(
    arch: Annotated[str, typer.Argument(help="Architecture, e.g. resnet20 or resnet50.")],
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    precision: Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto.")] = "float32",
    steps: Annotated[int, typer.Option(min=1, help="Timed steps.")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps first.")] = 10,
    xla: Annotated[bool, typer.Option("--xla", help="Compile the train step with XLA.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Training images/s on synthetic data at the architecture's default input size."""
    from core.bench import train_throughput
    from core.models import parse_architecture

    try:
        parse_architecture(arch)
    except ValueError as exc:
        _fail(str(exc))
    target = err_console if json_out else console
    with target.status(f"{escape(arch)}: {warmup} warm-up + {steps} timed steps of {batch_size}"):
        try:
            result = train_throughput(
                arch, batch_size=batch_size, precision=precision, steps=steps, warmup=warmup,
                xla=xla,
            )  # fmt: skip
        except ValueError as exc:
            _fail(str(exc))
    if json_out:
        _echo_json(result)
        return
    table = Table(title=f"training throughput: {result['architecture']}", title_justify="left")
    table.add_column("setting")
    table.add_column("value", justify="right")
    shape = "×".join(map(str, result["input_shape"]))
    for label, value in (
        ("images/s", f"{result['images_per_second']:,.1f}"),
        ("step", f"{result['step_ms']:.1f} ms"),
        ("batch", str(result["batch_size"])),
        ("input", shape),
        ("dtype policy", result["dtype_policy"]),
        ("XLA", "on" if result["xla"] else "off"),
        ("timed steps", f"{result['steps']} ({result['seconds']:.1f}s)"),
        ("warm-up", f"{result['warmup']} ({result['warmup_seconds']:.1f}s)"),
        ("device", ", ".join(result["devices"])),
    ):
        table.add_row(label, value)
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
