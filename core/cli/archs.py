"""``resnet archs``: the architecture catalogue as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from core.cli.output import console, echo_json, err_console, fail, human_count, human_params


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
            fail(str(exc))
    if json_out:
        echo_json(entries)
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
