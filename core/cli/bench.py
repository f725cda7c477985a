"""``resnet bench``: throughput measurements on synthetic data."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.output import console, echo_json, err_console, fail


def build_bench_app() -> typer.Typer:
    """The ``bench`` command group."""
    bench_app = typer.Typer(help="Measure throughput on synthetic data.", no_args_is_help=True)
    bench_app.command("train")(bench_train)
    return bench_app


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
        fail(str(exc))
    target = err_console if json_out else console
    with target.status(f"{escape(arch)}: {warmup} warm-up + {steps} timed steps of {batch_size}"):
        try:
            result = train_throughput(
                arch, batch_size=batch_size, precision=precision, steps=steps, warmup=warmup,
                xla=xla,
            )  # fmt: skip
        except ValueError as exc:
            fail(str(exc))
    if json_out:
        echo_json(result)
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
