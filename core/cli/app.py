"""The ``resnet`` app: app-wide options (``--version``, ``--verbose``) and its commands."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Annotated

import typer
from rich.logging import RichHandler

import core
from core.cli.archs import archs
from core.cli.bench import build_bench_app
from core.cli.evaluate import evaluate, rescore
from core.cli.export import export
from core.cli.output import err_console
from core.cli.predict import RemotePredictor, predict, predict_with_server
from core.cli.train import train_command
from core.cli.weights import build_weights_app

HELP = "Train, evaluate and serve ResNet image classifiers (He et al. 2016)."


def build_app(*, remote_predictor: RemotePredictor | None = None) -> typer.Typer:
    """A fresh ``resnet`` app with the library's commands.

    Args:
        remote_predictor: Asks a server for predictions; with it, ``predict`` also takes
            ``--server URL --model NAME``. A program that serves models passes its client
            here, so the library itself needs none.

    Returns:
        The app; a caller may register more commands on it (each build is its own object).
    """
    app = typer.Typer(
        help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )
    app.callback()(main)
    app.command()(archs)
    app.command("train")(train_command)
    app.command()(evaluate)
    app.command()(rescore)
    app.command()(export)
    app.command("predict")(
        predict if remote_predictor is None else predict_with_server(remote_predictor)
    )
    app.add_typer(build_bench_app(), name="bench")
    app.add_typer(build_weights_app(), name="weights")
    return app


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


def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print versions, exit."),
    ] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log core.* at INFO.")] = False,
) -> None:
    """Train, evaluate and serve ResNet image classifiers (He et al. 2016)."""
    configure_logging(verbose)
