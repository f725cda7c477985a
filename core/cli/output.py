"""What every command shares: the consoles, error exits, JSON output and number formats.

Commands print results on stdout (``console``) and progress, warnings and errors on stderr
(``err_console``); with ``--json`` the JSON alone goes to stdout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Rich resolves sys.stdout/sys.stderr at each write, so test runners that swap them still see
# the output of these module-level consoles. soft_wrap: printed text is never hard-wrapped at
# the terminal's width, so a long path or file name stays whole for the reader and for grep
# (tables still fit themselves to the width).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (default 2, invalid input)."""
    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr."""
    err_console.print(
        f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True
    )


def echo_json(data: Any) -> None:
    """``data`` as indented JSON on stdout; arrays and paths are written as lists and strings."""
    # The run folder's JSON files and the CLI's output convert values the same way.
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


def percent(x: Any) -> str:
    """A fraction as ``"12.34%"``; ``"-"`` for a missing or NaN value."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def duration(s: float) -> str:
    """Seconds as ``m:ss``, or ``h:mm:ss`` from an hour on."""
    s = max(0, round(s))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


# --------------------------------------------------------------------------- metrics


_METRIC_ROWS: Sequence[tuple[str, str]] = (
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


def metrics_table(metrics: dict[str, Any], *, title: str | None = None) -> Table:
    """The headline numbers of a metrics dict (single- or multi-label) as a two-column table."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in _METRIC_ROWS:
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
            text = percent(value)
        table.add_row(label, text)
    return table
